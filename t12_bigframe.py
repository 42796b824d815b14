import time, threading
import h
from h import *
h.LOG = "/tmp/s12/revE/proxy3.log"
pid = int(open("/tmp/s12/revE/proxy3.pid").read())
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
c = openai.OpenAI(base_url="http://127.0.0.1:18738/v1", api_key="sk-x", max_retries=0)
print("rss0", rss())
for size in (3 << 20, 12 << 20):
    t = tid("bigf"); t0 = time.time()
    st = c.images.generate(model="gpt-image-1", prompt="p", stream=True, partial_images=3, extra_headers={"x-request-id": t, "x-img-bytes": str(size)})
    evs = [(e.type, len(e.b64_json)) for e in st]
    print(size, round(time.time()-t0, 2), evs[-1], "rss", rss())
    print(h.summary(t)[0])
for mode in ("noevent",):
    t = tid("bigfne")
    st = c.images.generate(model="gpt-image-1", prompt="p", stream=True, partial_images=2, extra_headers={"x-request-id": t, "x-mock": mode})
    print([e.type for e in st]); print(h.summary(t)[0])
