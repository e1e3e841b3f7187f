"""What a Dify Jinja2 run costs before any sandbox (issue 12's Jinja2 target).

Dify's Jinja2 runner builds its template from a string in every run, so jinja2 lexes,
parses, generates Python source and compiles it each time. This times that for the warm pool
benchmark's template (`tests/it/warm_pool.rs`, `dify_cases`) in an interpreter that has
imported jinja2 and built one template already, as the zygote has:
  hot      the same process again (the floor of any design);
  forked   the first template in a fresh fork of it, as a warm run is (its page faults
           included: copy-ahead moves most of them off a run's path), and that fork's count
           of minor faults.

    python3 benches/jinja2_floor.py        (any Python with jinja2; RUNS=50)
"""

import os
import resource
import statistics
import time

import jinja2

RUNS = int(os.environ.get("RUNS", "50"))
SOURCE = (
    "Hi {{ name | upper }}!{% for i in items %} {{ loop.index }}:{{ i.k }}={{ i.v * 10 }}"
    "{% endfor %}"
)
INPUTS = {"name": "Zo\u00eb", "items": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]}


def once():
    start = time.perf_counter_ns()
    jinja2.Template(SOURCE).render(**INPUTS)
    return (time.perf_counter_ns() - start) / 1e6


def forked():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        took = once()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        os.write(w, b"%f %d" % (took, faults))
        os._exit(0)
    os.close(w)
    took, faults = os.read(r, 64).split()
    os.close(r)
    os.waitpid(pid, 0)
    return float(took), int(faults)


jinja2.Template("{{ s }}").render(s="")  # what the zygote does once
once()
hot = [once() for _ in range(RUNS)]
fork = [forked() for _ in range(RUNS)]
print(
    "jinja2 %s, template of the warm pool benchmark, %d each: hot p50 %.2f ms; "
    "first in a fresh fork p50 %.2f ms, %d minor faults"
    % (
        jinja2.__version__,
        RUNS,
        statistics.median(hot),
        statistics.median(t for t, _ in fork),
        statistics.median(f for _, f in fork),
    )
)
