from rlhf.config.base import ConfigError, TrainingConfig, config_from_dict, parse_config, save_config

__all__ = ["ConfigError", "TrainingConfig", "config_from_dict", "parse_config", "save_config"]
