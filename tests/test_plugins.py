"""A class in another installed package, declared as a siteflow.plugins entry point, is usable by name."""

from __future__ import annotations

import sys

from siteflow.config import parse_config
from siteflow.core.registry import MODELS

PLUGIN = '''
from torch import nn
from siteflow.core.registry import MODELS

@MODELS.register("plugin_net")
class PluginNet(nn.Conv2d):
    def __init__(self, in_channels: int, num_classes: int, *, kernel: int = 1) -> None:
        super().__init__(in_channels, num_classes, kernel, padding=kernel // 2)
'''


def test_an_entry_point_plugin_registers_its_model(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    dist_info = tmp_path / "my_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[siteflow.plugins]\nmy_plugin = my_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_plugin", raising=False)
    assert "plugin_net" not in MODELS

    raw = {
        "common": {
            "dataset": {"name": "synthetic_fundus", "kwargs": {"root_path": str(tmp_path / "data")}},
            "model": {"name": "plugin_net", "kwargs": {"kernel": 3}},
            "strategy": {"name": "local"},
        },
        "all_tasks_datasets": [{"task_id": 1, "task_name": "a", "kwargs": {"folder": "Domain1"}}],
        "current_tasks": {"task_ids": [1]},
    }
    try:
        config = parse_config(raw, name="plugin", source=tmp_path / "plugin.yaml")
        assert config.model.name == "plugin_net" and config.model.kwargs == {"kernel": 3}
        assert MODELS.get("plugin_net")(3, 2, kernel=3).kernel_size == (3, 3)
    finally:
        MODELS.unregister("plugin_net")
