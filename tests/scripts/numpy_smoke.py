# Imports the fixture venv's packages inside the rootfs and computes with numpy.
import numpy as np, requests, httpx, jinja2
a = np.arange(256, dtype=np.float64).reshape(16, 16)
assert float((a @ a.T).trace()) == float((a * a).sum())
assert jinja2.Template("{{ x }}!").render(x="hi") == "hi!"
assert requests.__version__ and httpx.__version__
print("numpy ok", np.__version__)
