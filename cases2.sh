source ./sweep.sh
P=
run "port in use" --upstream http://127.0.0.1:1 --port $P --metrics-port 0
run "metrics port in use" --upstream http://127.0.0.1:1 --port 0 --metrics-port $P
run "port == metrics port" --upstream http://127.0.0.1:1 --port 47123 --metrics-port 47123
run "port -1" --upstream http://127.0.0.1:1 --port -1 --metrics-port 0
run "port 70000" --upstream http://127.0.0.1:1 --port 70000 --metrics-port 0
run "port abc" --upstream http://127.0.0.1:1 --port abc --metrics-port 0
run "metrics-port -1" --upstream http://127.0.0.1:1 --port 0 --metrics-port -1
run "metrics-port 70000" --upstream http://127.0.0.1:1 --port 0 --metrics-port 70000
run "port 80 (priv)" --upstream http://127.0.0.1:1 --port 80 --metrics-port 0
run "host bogus" $B --host 999.1.1.1
run "host name unresolvable" $B --host no.such.host.invalid
run "host not local" $B --host 10.255.255.1
run "metrics-host bogus" $B --metrics-host 999.1.1.1
run "host empty" $B --host "''"
run "admin-hosts empty" $B --admin-hosts "''"
run "admin-hosts ' , '" $B --admin-hosts "' , '"
for t in idle-timeout connect-timeout total-timeout header-timeout body-timeout keepalive-timeout drain-timeout send-timeout; do
  run "$t 0" $B --$t 0
  run "$t -1" $B --$t -1
  run "$t nan" $B --$t nan
  run "$t inf" $B --$t inf
  run "$t 1e300" $B --$t 1e300
done
