"""Options of the labeling commands: ``rlhf label init|add-labeler|admin-token|export|simulate``
and ``rlhf serve``."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError

DB_HELP = "The labeling database: sqlite:///labels.db (a file, the default) or postgresql://user@host/dbname."
DEFAULT_DB = "sqlite:///labels.db"


def _check_db(db: str) -> None:
    if not (db.startswith("sqlite:///") or db.startswith(("postgresql://", "postgres://"))):
        raise ConfigError(f"--db {db!r}: expected sqlite:///path.db or postgresql://...")


@dataclass
class LabelInitConfig:
    """Create a labeling project from a candidates file (``rlhf label generate``'s output)."""

    db: str = field(default=DEFAULT_DB, metadata={"help": DB_HELP + " Must not hold a project yet."})
    candidates: str = field(default="", metadata={"help": "JSONL of {prompt, responses: [...], ended?: [...]}, "
                                                         "one item to rank per line."})
    guidelines: str = field(default="", metadata={"help": "A text or markdown file shown beside every task."})
    overlap: int = field(default=2, metadata={"help": "Distinct labelers per item (and never more labels than this)."})
    gold_items: str = field(default="", metadata={"help": "Hidden check items: JSONL of {prompt, responses, ranking} "
                                                         "with the known best ordering (best first)."})
    embedded_gold: int = field(default=0, metadata={"help": "On the embedded task only: move this many candidates "
                                                            "(the last ones) to gold items, ranked by the gold reward."})
    gold_rate: float = field(default=0.1, metadata={"help": "Share of each labeler's labels that are gold items."})
    reservation_seconds: float = field(default=900.0, metadata={"help": "How long an item handed out stays reserved "
                                                                       "for its labeler before it returns to the pool."})
    ramp: int = field(default=20, metadata={"help": "Experience ramp of the weight: a labeler's first labels count "
                                                    "labels/ramp, full weight from `ramp` labels on."})
    kappa_threshold: float = field(default=0.5, metadata={"help": "Flag a labeler whose Cohen's kappa with the others "
                                                                  "is below this."})
    gold_threshold: float = field(default=0.7, metadata={"help": "Flag a labeler whose gold accuracy is below this."})
    min_shared: int = field(default=10, metadata={"help": "Comparisons needed before a kappa or gold accuracy can flag."})

    def validate(self) -> None:
        _check_db(self.db)
        if not self.candidates:
            raise ConfigError("label init needs --candidates (the output of `rlhf label generate`)")
        if self.overlap < 1:
            raise ConfigError(f"--overlap must be at least 1, got {self.overlap}")
        if not 0.0 <= self.gold_rate < 1.0:
            raise ConfigError(f"--gold_rate must be in [0, 1), got {self.gold_rate}")
        if self.embedded_gold < 0:
            raise ConfigError(f"--embedded_gold must be >= 0, got {self.embedded_gold}")
        if self.gold_rate > 0 and not self.gold_items and not self.embedded_gold:
            self.gold_rate = 0.0  # nothing to mix in
        if self.reservation_seconds <= 0:
            raise ConfigError(f"--reservation_seconds must be positive, got {self.reservation_seconds}")
        if self.ramp < 0 or self.min_shared < 1:
            raise ConfigError("--ramp must be >= 0 and --min_shared >= 1")


@dataclass
class AddLabelerConfig:
    """Add a labeler and print their private link: ``rlhf label add-labeler NAME``."""

    name: str = field(default="", metadata={"help": "The labeler's name (letters, digits, _ . -), shown on the admin "
                                                    "page and in the export."})
    db: str = field(default=DEFAULT_DB, metadata={"help": DB_HELP})
    base_url: str = field(default="http://127.0.0.1:8000", metadata={"help": "Where `rlhf serve` is reached, for the link."})

    def validate(self) -> None:
        _check_db(self.db)
        if not self.name:
            raise ConfigError("add-labeler needs a name: rlhf label add-labeler NAME")


@dataclass
class AdminTokenConfig:
    """Make a new admin token (the previous one stops working) and print the admin's link."""

    db: str = field(default=DEFAULT_DB, metadata={"help": DB_HELP})
    base_url: str = field(default="http://127.0.0.1:8000", metadata={"help": "Where `rlhf serve` is reached, for the link."})

    def validate(self) -> None:
        _check_db(self.db)


@dataclass
class LabelExportConfig:
    """Write the labels as rankings for ``rlhf rm``, each with its labeler and weight."""

    db: str = field(default=DEFAULT_DB, metadata={"help": DB_HELP})
    output_file: str = field(default="rankings.jsonl", metadata={"help": "Where the rankings go (JSONL)."})
    min_weight: float = field(default=0.0, metadata={"help": "Leave out every label of a labeler whose current weight is "
                                                             "below this (0: keep all); the early labels of a labeler "
                                                             "kept stay in, with their smaller per-label weight."})

    def validate(self) -> None:
        _check_db(self.db)
        if not 0.0 <= self.min_weight <= 1.0:
            raise ConfigError(f"--min_weight must be in [0, 1], got {self.min_weight}")


@dataclass
class LabelSimulateConfig:
    """Play the embedded task's simulated labelers through a running app's HTTP API."""

    url: str = field(default="http://127.0.0.1:8000", metadata={"help": "The running `rlhf serve`."})
    labelers: int = field(default=5, metadata={"help": "Simulated labelers (alice, bob, ... with noise 0.10 to 0.40)."})
    careless: int = field(default=0, metadata={"help": "How many of them (the last) judge near coin-flip."})
    careless_noise: float = field(default=5.0, metadata={"help": "Noise of a careless labeler's judgments "
                                                                 "(gold rewards differ by ~0.1-1, so 5 is near a coin flip)."})
    name_prefix: str = field(default="sim-", metadata={"help": "Prefix of the simulated labelers' names."})
    max_labels: int = field(default=0, metadata={"help": "Stop each labeler after this many labels (0: until its queue "
                                                         "is empty)."})
    seed: int = field(default=0, metadata={"help": "Seed of the labelers' noise."})

    def validate(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url {self.url!r}: expected http://host:port")
        if self.labelers < 1 or not 0 <= self.careless <= self.labelers:
            raise ConfigError(f"need --labelers >= 1 and 0 <= --careless <= --labelers, got {self.labelers}, {self.careless}")


@dataclass
class ServeConfig:
    """The web app: labeling, admin and (with --runs) the dashboard of runs."""

    db: str = field(default=DEFAULT_DB, metadata={"help": DB_HELP})
    runs: str = field(default="", metadata={"help": "A folder of runs (any stage's output_dir, `rlhf demo`'s) for the "
                                                    "dashboard; empty: no dashboard."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind; anything but 127.0.0.1/localhost/::1 "
                                                             "exposes the app to the network (a warning says so)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})

    def validate(self) -> None:
        _check_db(self.db)
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1..65535, got {self.port}")
