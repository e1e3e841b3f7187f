"""Print SPEC with its python3 interpreter set to PYTHON and `packages:` set to the
distributions named in PIP_PACKAGES (version specifiers and extras dropped; prebake adds their
installed requirements itself). Usage: select_packages.py SPEC PYTHON "PIP_PACKAGES" """
import re
import sys

spec, python, wanted = sys.argv[1], sys.argv[2], sys.argv[3].split()
names = [re.split(r"[\[<>=!~; ]", w, maxsplit=1)[0] for w in wanted if not w.startswith("-")]
out, in_python = [], False
for line in open(spec, encoding="utf-8").read().splitlines():
    stripped = line.strip()
    if stripped.startswith(("packages:", "requirements:")) and in_python:
        continue
    if line.startswith("  ") and not line.startswith("   "):
        in_python = stripped == "python3:"
    if in_python and stripped.startswith("interpreter:"):
        indent = line[: len(line) - len(line.lstrip())]
        out.append(f"{indent}interpreter: {python}")
        out.append(f"{indent}packages: [{', '.join(names)}]")
        continue
    out.append(line)
print("\n".join(out))
