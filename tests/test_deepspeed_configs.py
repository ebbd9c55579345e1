"""The shipped accelerate config files (examples/accelerate/) load as accelerate reads them, and
the DeepSpeed / FSDP plugins built from them have the stage, offload and precision their names
promise. DeepSpeed itself does not run on this CPU-only machine (docs/distributed.md), so the
ZeRO files are checked here and run on a GPU machine."""

from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).parents[1] / "examples" / "accelerate"


def load(name):
    """The file through accelerate's own loader (rejects unknown keys), and its raw fields."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = EXAMPLES / name
    return load_config_from_file(str(path)), yaml.safe_load(path.read_text())


def deepspeed_plugin(fields, mixed_precision):
    """The DeepSpeedPlugin that `accelerate launch` builds from a config file's deepspeed_config."""
    from accelerate import DeepSpeedPlugin

    ds = fields["deepspeed_config"]
    plugin = DeepSpeedPlugin(zero_stage=ds["zero_stage"], gradient_accumulation_steps=ds["gradient_accumulation_steps"],
                             gradient_clipping=ds["gradient_clipping"],
                             offload_optimizer_device=ds["offload_optimizer_device"],
                             offload_param_device=ds["offload_param_device"], zero3_init_flag=False,
                             zero3_save_16bit_model=ds.get("zero3_save_16bit_model", False))
    plugin.set_mixed_precision(mixed_precision)
    return plugin.deepspeed_config


@pytest.mark.parametrize("name, stage, offload", [("zero2.yaml", 2, "none"), ("zero3.yaml", 3, "none"),
                                                   ("zero3_offload.yaml", 3, "cpu")])
def test_zero_configs_build_the_deepspeed_plugin_they_promise(name, stage, offload):
    cluster, fields = load(name)
    assert cluster.distributed_type.value == "DEEPSPEED"
    assert cluster.mixed_precision == "bf16"
    config = deepspeed_plugin(fields, cluster.mixed_precision)
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == offload
    assert zero["offload_param"]["device"] == offload
    assert config["bf16"]["enabled"] is True
    assert config["gradient_clipping"] == 1.0
    if stage == 3:  # the final model is gathered into one 16-bit state dict when saved
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert fields["deepspeed_config"]["zero3_init_flag"] is True


def test_fsdp2_config_builds_a_version_2_plugin(monkeypatch):
    """As `accelerate launch --config_file examples/accelerate/fsdp2.yaml` does: the file becomes
    environment variables, from which the plugin (and our CPU path, sharding.py) is built."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    cluster, fields = load("fsdp2.yaml")
    assert cluster.distributed_type.value == "FSDP"
    args, *_ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(EXAMPLES / "fsdp2.yaml"), "--num_processes", "2", "train.py"]))
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # parameters sharded between uses (FULL_SHARD)
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert plugin.cpu_offload.__class__.__name__ == "OffloadPolicy"  # no offload (CPUOffloadPolicy when on)
    assert not fields["fsdp_config"]["fsdp_offload_params"]


def test_ddp_config_is_plain_multi_process():
    cluster, fields = load("ddp.yaml")
    assert cluster.distributed_type.value == "MULTI_GPU"
    assert "deepspeed_config" not in fields and "fsdp_config" not in fields


def test_every_shipped_config_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == ["ddp.yaml", "fsdp2.yaml", "zero2.yaml", "zero3.yaml",
                                                               "zero3_offload.yaml"]
