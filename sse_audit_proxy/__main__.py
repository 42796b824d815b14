import sys

from sse_audit_proxy.cli.main import main

sys.exit(main())
