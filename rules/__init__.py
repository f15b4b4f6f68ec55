"""The decision table as data (``default_rules.toml``) and the engine that reads it.

``load_rules`` reads and validates a rules file (the packaged default when no path is given);
``score_similarity`` combines the measured signals into a similar/different verdict;
``recommend`` turns a dataset summary, a similarity report and a backbone into a ``Recommendation``.
"""

from tl_advise.rules.decision import Decision, decide
from tl_advise.rules.engine import (
    SimilarityVerdict,
    ramp_score,
    recommend,
    score_similarity,
    signals_from_measurements,
)
from tl_advise.rules.schema import (
    DEFAULT_RULES_FILE,
    SIGNAL_NAMES,
    RuleSet,
    default_rules_text,
    dump_rules,
    load_rules,
    rules_from_mapping,
)

__all__ = [
    "DEFAULT_RULES_FILE",
    "SIGNAL_NAMES",
    "Decision",
    "RuleSet",
    "SimilarityVerdict",
    "decide",
    "default_rules_text",
    "dump_rules",
    "load_rules",
    "ramp_score",
    "recommend",
    "rules_from_mapping",
    "score_similarity",
    "signals_from_measurements",
]
