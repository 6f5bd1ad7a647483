"""Chip profiles: the numbers the cost model needs about one accelerator and its links.

Profiles are data, kept as TOML files: the built-in ones live in
``shardc/profiles/`` (``tpu-v4``, the default, and ``h100-nvlink``), and users
pass their own with ``--chip-file profile.toml`` (read with the standard
library's :mod:`tomllib`).  A profile has the raw hardware numbers and, in a
``[calibration]`` table, the terms fitted to measurements and the communication model they were
fitted in
(``benchmarks/calibrate.py`` fits tpu-v4's to the paper's Table 2); the cost
model's *bound* never uses the calibration.
"""
from __future__ import annotations

import enum
import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from shardc.errors import ShardcError

PROFILE_DIR = Path(__file__).with_name("profiles")
DEFAULT_CHIP = "tpu-v4"


class Topology(enum.StrEnum):
    """How chips are wired: a torus of rings per mesh axis, or a switch joining every pair."""

    TORUS = "torus"
    SWITCHED = "switched"


@dataclass(frozen=True)
class Calibration:
    """Terms of the calibrated estimate, one per named mechanism (the roofline bound never uses them).

    ``matmul_tile`` is a fixed hardware shape (the matrix unit's systolic tile), not a fitted
    term; the other three are fitted (``benchmarks/calibrate.py``).  ``comm`` is the
    communication model the terms were fitted in: the default ``--comm`` of the profile, and
    the only model the terms are applied in.
    """

    hop_latency: float = 0.0  # seconds per ring step of a collective (one ICI hop)
    op_overhead: float = 0.0  # seconds per executed op (a kernel launch; views excepted)
    mxu_fill: float = 0.0  # rows of pipeline fill per pass of a weight tile: efficiency m / (m + this)
    peak_fraction: float = 1.0  # fraction of peak a large, tile-aligned matmul sustains
    matmul_tile: int = 0  # side of the systolic tile (TPU v4: 128); 0: no tile padding
    comm: str = ""  # the communication model the terms were fitted in ("" if none)

    def is_zero(self) -> bool:
        return (self.hop_latency, self.op_overhead, self.mxu_fill, self.peak_fraction,
                self.matmul_tile) == (0.0, 0.0, 0.0, 1.0, 0)

    def terms(self) -> dict[str, float]:
        """The fitted terms by name (not the tile, a hardware shape)."""
        return {"hop_latency": self.hop_latency, "op_overhead": self.op_overhead,
                "mxu_fill": self.mxu_fill, "peak_fraction": self.peak_fraction}


@dataclass(frozen=True)
class ChipProfile:
    """One accelerator: compute, memory and interconnect."""

    name: str
    description: str
    peak_flops: float  # FLOP/s of bf16 matmuls
    hbm_bytes: float  # capacity
    hbm_bandwidth: float  # bytes/s
    link_bandwidth: float  # bytes/s per link per direction
    links: int
    topology: Topology
    calibration: Calibration = Calibration()
    # A switched profile describes one node of ``node_size`` chips on one switch; a collective whose
    # group spans nodes runs over the slower inter-node network instead (0: one switch joins all).
    node_size: int = 0
    internode_bandwidth: float = 0.0  # bytes/s per chip per direction between nodes
    internode_latency: float = 0.0  # seconds per step of a ring that crosses nodes
    # Every mesh axis longer than one chip is a multiple of this (TPU v4 slices: 2); the planner's meshes.
    axis_multiple: int = 1

    @property
    def ici_bandwidth(self) -> float:
        """Bytes/s a chip sends over all its links at once (TPU v4: 6 x 45 GB/s = 270 GB/s)."""
        return self.link_bandwidth * self.links

    @property
    def axis_bandwidth(self) -> float:
        """Bytes/s of one torus axis: a bidirectional ring, two links (TPU v4: 90 GB/s)."""
        return 2 * self.link_bandwidth

    @property
    def default_comm(self) -> str:
        """The communication model the profile's terms were fitted in (``paper`` if it has none)."""
        return self.calibration.comm or "paper"

    def uncalibrated(self) -> "ChipProfile":
        """This profile without its fitted overheads (what the bound is computed with)."""
        return replace(self, calibration=Calibration())

    def with_calibration(self, calibration: Calibration) -> "ChipProfile":
        return replace(self, calibration=calibration)


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with shardc."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(chip: str | Path | ChipProfile | None = None) -> ChipProfile:
    """A built-in profile by name, or a profile TOML file by path (default: tpu-v4)."""
    if isinstance(chip, ChipProfile):
        return chip
    if chip is None:
        chip = DEFAULT_CHIP
    path = Path(chip)
    if not str(chip).endswith(".toml"):
        path = PROFILE_DIR / f"{chip}.toml"
        if str(chip) not in builtin_profiles():  # a name, never a path ('../../x')
            raise ShardcError(f"unknown chip '{chip}'; the built-in profiles are {', '.join(builtin_profiles())}",
                              hint="or describe yours in a TOML file and pass --chip-file FILE")
    return profile_from_dict(read_toml(path, f"no such chip profile: {path}", f"{path}: "), str(path))


def read_toml(path: Path, missing: str, where: str) -> dict:
    """The table of the TOML file ``path``; a ShardcError saying ``missing`` if there is none, or
    ``where`` and what is wrong if it cannot be read."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardcError(missing) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ShardcError(f"{where}cannot read it ({err})") from None
    except (ValueError, RecursionError) as err:  # TOMLDecodeError, and an integer too long for int()
        raise ShardcError(f"{where}not a valid TOML chip profile ({_toml_problem(err)})") from None


def _node_fields(data: dict, topology: Topology, where: str) -> tuple[int, float, float]:
    """``node_size``, ``internode_bandwidth`` and ``internode_latency`` of a switched profile, checked.

    They come together: a node size without an inter-node link would leave traffic between nodes
    unpriced.
    """
    keys = ("node_size", "internode_bandwidth", "internode_latency")
    given = [k for k in keys if k in data]
    if not given:
        return 0, 0.0, 0.0
    if topology is not Topology.SWITCHED:
        raise ShardcError(f"{where}: '{given[0]}' describes nodes of a switched topology, not a torus")
    for key in ("node_size", "internode_bandwidth"):
        if key not in data:
            raise ShardcError(f"{where}: '{given[0]}' needs '{key}' too")
    size, bandwidth, latency = data["node_size"], data["internode_bandwidth"], data.get("internode_latency", 0.0)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= _MOST_CHIPS:
        raise ShardcError(f"{where}: 'node_size' must be a whole number of chips, at least 1 and at most 10^18, "
                          f"got {_shown(size)}")
    if not _finite(bandwidth) or bandwidth < 1:
        raise ShardcError(f"{where}: 'internode_bandwidth' must be a positive number, at least 1, got {bandwidth!r}")
    if not _finite(latency) or latency < 0:
        raise ShardcError(f"{where}: 'internode_latency' must be a number >= 0, got {latency!r}")
    return size, float(bandwidth), float(latency)


def _toml_problem(err: Exception) -> str:
    """What is wrong with a TOML file, in words (tomllib recurses on nested arrays and tables, and
    reads integers with int(), which refuses more than 4,300 digits)."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if not isinstance(err, tomllib.TOMLDecodeError):
        return "a number with too many digits"
    return str(err)


_MOST_CHIPS = 10**18  # as for the sizes of a program's dims and mesh axes


def _shown(value: object) -> str:
    """A field's value for a message, a very long number cut short."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    """A TOML number (not a bool) that is a finite float: not nan or inf, nor an integer too long for a float."""
    if not _is_number(value):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except OverflowError:  # a 400-digit integer
        return False


def profile_from_dict(data: dict, where: str = "<profile>") -> ChipProfile:
    """Build a profile from parsed TOML, with clear errors for missing or bad fields."""
    numbers = ("peak_flops", "hbm_bytes", "hbm_bandwidth", "link_bandwidth", "links")
    for key in numbers:
        if key not in data:
            raise ShardcError(f"{where}: the chip profile needs '{key}'")
        value = data[key]
        # nan and inf are floats too; below 1 (1 FLOP/s, 1 byte, 1 byte/s) a time divided by it overflows
        if not _finite(value) or value <= 0 or (value < 1 and key != "links"):  # links: a whole number, below
            raise ShardcError(f"{where}: '{key}' must be a positive, finite number, at least 1, got {_shown(value)}")
    if (not isinstance(data["links"], int) and not float(data["links"]).is_integer()) or data["links"] > _MOST_CHIPS:
        raise ShardcError(f"{where}: 'links' must be a whole number of links, at least 1 and at most 10^18, "
                          f"got {_shown(data['links'])}")
    try:
        topology = Topology(data.get("topology", "torus"))
    except ValueError:
        raise ShardcError(f"{where}: topology must be 'torus' or 'switched', got {data.get('topology')!r}") from None
    node_size, internode_bandwidth, internode_latency = _node_fields(data, topology, where)
    table = data.get("calibration", {})
    if not isinstance(table, dict):
        raise ShardcError(f"{where}: 'calibration' must be a table ([calibration] with its terms), got {table!r}")
    calibration = _calibration(table, where)
    axis_multiple = data.get("axis_multiple", 1)
    if not isinstance(axis_multiple, int) or isinstance(axis_multiple, bool) or not 1 <= axis_multiple <= _MOST_CHIPS:
        raise ShardcError(f"{where}: 'axis_multiple' must be a whole number of chips, 1 to 10^18, "
                          f"got {_shown(axis_multiple)}")
    return ChipProfile(
        name=str(data.get("name", Path(where).stem)),
        description=str(data.get("description", "")),
        peak_flops=float(data["peak_flops"]),
        hbm_bytes=float(data["hbm_bytes"]),
        hbm_bandwidth=float(data["hbm_bandwidth"]),
        link_bandwidth=float(data["link_bandwidth"]),
        links=int(data["links"]),
        topology=topology,
        node_size=node_size,
        internode_bandwidth=internode_bandwidth,
        internode_latency=internode_latency,
        calibration=calibration,
        axis_multiple=axis_multiple,
    )


def _calibration(table: dict, where: str) -> Calibration:
    """The ``[calibration]`` table, checked: known terms, numbers >= 0, and the model they were fitted in."""
    known = {f.name for f in fields(Calibration)}
    unknown = set(table) - known
    if unknown:
        raise ShardcError(f"{where}: unknown calibration term(s) {', '.join(sorted(unknown))}; "
                          f"expected {', '.join(sorted(known))}")
    comm = table.get("comm", "")
    if comm not in ("", "paper", "torus"):  # the model the terms were fitted in
        raise ShardcError(f"{where}: calibration 'comm' must be 'paper' or 'torus', got {comm!r}")
    for key, value in table.items():
        if key != "comm" and (not _finite(value) or value < 0):
            raise ShardcError(f"{where}: calibration '{key}' must be a finite number >= 0, got {value!r}")
    if not 0 < float(table.get("peak_fraction", 1.0)) <= 1:
        raise ShardcError(f"{where}: calibration 'peak_fraction' must be in (0, 1], got {table['peak_fraction']!r}")
    if "matmul_tile" in table and float(table["matmul_tile"]) != int(table["matmul_tile"]):
        raise ShardcError(f"{where}: calibration 'matmul_tile' must be a whole number, got {table['matmul_tile']!r}")
    values = {k: (int(v) if k == "matmul_tile" else float(v)) for k, v in table.items() if k != "comm"}
    cal = Calibration(**values, comm=comm)  # type: ignore[arg-type]
    if not cal.is_zero() and not comm:
        raise ShardcError(f"{where}: calibration terms need 'comm', the model ('paper' or 'torus') they were "
                          "fitted in")
    return cal
