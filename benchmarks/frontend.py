"""The front end is linear in the length of a program: parse + check time per statement.

Four kinds of long program, each at 10^3, 10^4 and 10^5 statements:

* ``assign``   -- ``v1 = v0 + x``, ``v2 = v1 + x``, ... (a chain of assignments)
* ``comment``  -- declarations, each under a comment line of its own and with a comment after it
* ``output``   -- n/2 assignments, then n/2 ``output`` statements naming them
* ``dims``     -- ``dims`` lines, one dim each (syntax stage only: a program has at most 26 dims)

Each program is parsed and checked by :func:`shardc.parse` (what ``shardc check`` does before it
summarises), best of ``--repeat`` runs; the table gives microseconds of CPU time per statement
(this process's own, so that other work on a shared machine does not count), the ratio of the
largest size's figure to the smallest's (flat: within 2x), and the CPU and wall time at 10^5.

    python benchmarks/frontend.py            # the table
    python benchmarks/frontend.py --json     # the raw figures
"""
from __future__ import annotations

import argparse
import json
import platform
import string
import time

import shardc
from shardc.language.parser import parse_module

SIZES = (10**3, 10**4, 10**5)


def assign(n: int) -> str:
    body = "".join(f"v{i + 1} = v{i} + x\n" for i in range(n))
    return "model m\nmesh x=2\ndims B=2, E=4\ninput x : f32[B, E]\nv0 = x * x\n" + body + f"output v{n}\n"


def comment(n: int) -> str:
    body = "".join(f"# weight {i}\nparam w{i} : f32[B, E]  # the {i}th\n" for i in range(n))
    return "model m\nmesh x=2\ndims B=2, E=4\ninput x : f32[B, E]\n" + body + "y = x + w0\noutput y\n"


def output(n: int) -> str:
    body = "".join(f"y{i} = x + x\n" for i in range(n // 2)) + "".join(f"output y{i}\n" for i in range(n // 2))
    return "model m\nmesh x=2\ndims B=2, E=4\ninput x : f32[B, E]\n" + body


def dims(n: int) -> str:
    # A program has at most 26 dims (one letter each), so this one is read by the syntax stage alone
    # (parse_module: lexing, the tree, locations, comments), where a long run of dims lines was slow.
    letters = string.ascii_uppercase
    body = "".join(f"dims {letters[i % 26]}=2\n" for i in range(n))
    return "model m\nmesh x=2\n" + body + "input x : f32[A, B]\ny = x + x\noutput y\n"


KINDS = {"assign": assign, "comment": comment, "output": output, "dims": dims}


def time_one(kind: str, text: str, repeat: int) -> tuple[float, float]:
    """(best CPU seconds, best wall seconds) of ``repeat`` reads of ``text``."""
    read = parse_module if kind == "dims" else shardc.parse
    cpu = wall = float("inf")
    for _ in range(repeat):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        read(text, "bench.model")
        cpu = min(cpu, time.process_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start_wall)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--repeat", type=int, default=3, help="runs per program; the best is kept (default 3)")
    args = parser.parse_args()
    shardc.parse(assign(10), "warm.model")  # build the lark parser once, outside the timings
    figures: dict[str, dict[int, tuple[float, float]]] = {}
    for kind, make in KINDS.items():
        figures[kind] = {}
        for n in SIZES:
            text = make(n)  # made outside the timed region
            figures[kind][n] = time_one(kind, text, args.repeat)
    if args.json:
        print(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                          "cpu_seconds": {k: {n: c for n, (c, _) in row.items()} for k, row in figures.items()},
                          "wall_seconds": {k: {n: w for n, (_, w) in row.items()} for k, row in figures.items()}},
                         indent=2))
        return
    print(f"front end (shardc.parse), best of {args.repeat}; {platform.python_version()} on {platform.platform()}")
    print("per statement: CPU time of this process (other processes on the machine do not count)")
    print(f"{'program':<10}" + "".join(f"{n:>12,}" for n in SIZES) + "   ratio  10^5 cpu  10^5 wall")
    for kind, row in figures.items():
        per = [row[n][0] / n * 1e6 for n in SIZES]
        cpu, wall = row[SIZES[-1]]
        print(f"{kind:<10}" + "".join(f"{p:>10.1f}us" for p in per)
              + f"   {per[-1] / per[0]:5.2f}  {cpu:6.2f} s  {wall:6.2f} s")


if __name__ == "__main__":
    main()
