# Imports the fixture venv's packages inside the rootfs and computes with numpy.
import os
import numpy as np, requests, httpx, jinja2
a = np.arange(256, dtype=np.float64).reshape(16, 16)
assert float((a @ a.T).trace()) == float((a * a).sum())
assert jinja2.Template("{{ x }}!").render(x="hi") == "hi!"
assert requests.__version__ and httpx.__version__
# OpenBLAS runs the product on several threads (clone3 -> ENOSYS -> clone under the policy).
b = np.random.default_rng(0).standard_normal((600, 600))
c = b @ b.T
assert np.allclose(c, c.T)
threads = int([l for l in open("/proc/self/status") if l.startswith("Threads:")][0].split()[1]) if os.path.exists("/proc/self/status") else None
print("numpy ok", np.__version__, "threads", threads)
