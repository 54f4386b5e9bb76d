"""Every run's typed config, in one place: one module per command (``mine``, ``discover``, ``steer``, ``explain``,
``train_sae``, ``demo``), built from ``fields`` (a field and its help are one ``knob``, so ``--help`` and the
config cannot drift apart). The lowest layer: every other layer imports it downward. A run's config is saved in
its output (and fingerprints a mining work dir for resume)."""

from personamine.config.demo import DEMO_CONVERSATIONS, DEMO_CORPUS, DemoConfig, DemoSteerConfig
from personamine.config.discover import POSITIONS, DiscoverConfig
from personamine.config.explain import BACKENDS, SCORERS, ExplainConfig
from personamine.config.fields import (
    DEFAULT_DATE,
    DEFAULT_MODEL,
    at_least,
    check_fields,
    field_help,
    knob,
    parse_feature_list,
    resolve_config,
)
from personamine.config.mine import EXECUTION_FIELDS, MineConfig
from personamine.config.screen import SCREEN_EXECUTION_FIELDS, ScreenConfig
from personamine.config.steer import ALPHA_UNITS, CLAMP_UNITS, SteerConfig
from personamine.config.train_sae import TrainSaeConfig

__all__ = ["ALPHA_UNITS", "BACKENDS", "CLAMP_UNITS", "DEFAULT_DATE", "DEFAULT_MODEL", "DEMO_CONVERSATIONS",
           "DEMO_CORPUS", "DemoConfig", "DemoSteerConfig", "DiscoverConfig", "EXECUTION_FIELDS", "ExplainConfig",
           "MineConfig", "POSITIONS", "SCORERS", "SCREEN_EXECUTION_FIELDS", "ScreenConfig", "SteerConfig",
           "TrainSaeConfig", "at_least", "check_fields", "field_help", "knob", "parse_feature_list", "resolve_config"]
