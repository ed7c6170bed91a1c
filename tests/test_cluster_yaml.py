"""cluster.yaml against the JSON schema that ships inside the ray package."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

REPO = Path(__file__).resolve().parent.parent


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)

    assert config["provider"]["type"] == "aws"
    head = config["head_node_type"]
    types = config["available_node_types"]
    assert head in types and types[head]["resources"].get("GPU", 0) == 0
    (gpu_type,) = [name for name, node in types.items() if node["resources"].get("GPU", 0) > 0]
    workers = types[gpu_type]
    assert workers["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert 0 <= workers["min_workers"] <= workers["max_workers"] <= config["max_workers"]
    assert any("pip install" in command and "sa-engine" in command for command in config["setup_commands"])
    assert "aws_access_key_id" not in (REPO / "cluster.yaml").read_text().lower()


def test_the_cluster_job_config_loads(tmp_path):
    from pipelines.amg_config import build_parser, config_from_args

    args = build_parser("t").parse_args(
        [
            "--config",
            str(REPO / "pipelines" / "configs" / "vit_h_cluster.yaml"),
            "--input",
            "s3://b/i/",
            "--output",
            "s3://b/o",
        ]
    )
    config = config_from_args(args)
    assert (config.model, config.preset, config.device, config.gpus_per_actor) == ("vit_h", "sa1b", "cuda", 1)
    assert config.blur_faces_and_plates and config.quality_filters().active() == {"max_masks_per_image": 500}
