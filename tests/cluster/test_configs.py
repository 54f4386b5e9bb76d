"""The shipped cluster configs (cluster/*.yaml) pass the offline checks, and broken copies fail them with a
clear one-line error. No cluster, cloud account or network is used: a fixture refuses every connection."""

from __future__ import annotations

import json
import re
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from personamine.cluster import configs
from personamine.cluster.configs import (
    KUBERAY_VERSION,
    TESTED_RAY_VERSION,
    validate_launcher_config,
    validate_rayjob_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
RAYJOB = ROOT / "cluster" / "kuberay-rayjob.yaml"
LAUNCHER = ROOT / "cluster" / "ray-up-gpu.yaml"

Docs = list[Any]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Offline" is part of the validators' contract (CI has no cloud credentials), so any attempt to
    # connect fails the test instead of quietly passing on a machine that happens to be online.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _rayjob_docs() -> Docs:
    return list(yaml.safe_load_all(RAYJOB.read_text()))


def _rayjob(docs: Docs) -> dict[str, Any]:
    return next(d for d in docs if d.get("kind") == "RayJob")


def _spec(docs: Docs) -> dict[str, Any]:
    return _rayjob(docs)["spec"]


def _cluster(docs: Docs) -> dict[str, Any]:
    return _spec(docs)["rayClusterSpec"]


def _head_container(docs: Docs) -> dict[str, Any]:
    return _cluster(docs)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _head_params(docs: Docs) -> dict[str, Any]:
    return _cluster(docs)["headGroupSpec"]["rayStartParams"]


def _worker_group(docs: Docs) -> dict[str, Any]:
    return _cluster(docs)["workerGroupSpecs"][0]


def _worker_container(docs: Docs) -> dict[str, Any]:
    return _worker_group(docs)["template"]["spec"]["containers"][0]


def _write_docs(tmp_path: Path, docs: Docs, name: str = "manifest.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _write_text_edit(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, f"{old!r} not in {source.name}; update the test"
    path = tmp_path / source.name
    path.write_text(text.replace(old, new, 1))
    return path


def _expect_error(check: Callable[[Path], None], path: Path, pattern: str) -> str:
    with pytest.raises(ValueError) as info:
        check(path)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    assert str(path) in message, "errors must name the file"
    assert re.search(pattern, message), message
    return message


# --------------------------------------------------------------------------------------------------
# KubeRay RayJob


def test_shipped_rayjob_manifest_validates() -> None:
    validate_rayjob_manifest(RAYJOB)


def test_shipped_rayjob_keeps_the_driver_on_the_cpu_head() -> None:
    docs = _rayjob_docs()
    spec = _spec(docs)
    assert spec["entrypoint"].startswith("personamine mine /app/job.toml")
    assert "--ray" in spec["entrypoint"].split()
    assert spec["entrypointNumCpus"] == 1
    assert "entrypointNumGpus" not in spec
    assert spec["shutdownAfterJobFinishes"] is True
    # entrypointResources disables Ray's default head placement, so the head must be the only node
    # advertising the resource the driver asks for.
    wanted = json.loads(spec["entrypointResources"])
    # KubeRay strips the surrounding quotes before parsing the JSON, and the shell strips them too.
    head_resources = json.loads(_head_params(docs)["resources"].strip("'"))
    assert set(wanted) <= set(head_resources)
    assert "resources" not in _worker_group(docs)["rayStartParams"]
    assert "nvidia.com/gpu" not in _head_container(docs)["resources"]["limits"]
    assert _worker_container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _cluster(docs)["rayVersion"] == TESTED_RAY_VERSION
    for container in (_head_container(docs), _worker_container(docs)):
        assert container["image"] == f"rayproject/ray:{TESTED_RAY_VERSION}-py311-gpu"


def test_shipped_rayjob_mounts_the_configmap_it_ships() -> None:
    docs = _rayjob_docs()
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    head = _cluster(docs)["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    config_volume = next(name for name, v in volumes.items() if "configMap" in v)
    assert mounts[config_volume] == "/app"
    configmap = configmaps[volumes[config_volume]["configMap"]["name"]]
    tomllib.loads(configmap["data"]["job.toml"])
    claims = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    output_volume = next(name for name, path in mounts.items() if path == "/data")
    assert volumes[output_volume]["persistentVolumeClaim"]["claimName"] in claims
    assert "--output /data/" in _spec(docs)["entrypoint"]
    # The corpus and the hub cache: claims the manifest ships, at the same paths on the head and the workers.
    worker = {m["mountPath"]: m["name"] for m in _worker_container(docs)["volumeMounts"]}
    for path in ("/corpus", "/cache"):
        assert mounts[worker[path]] == path and volumes[worker[path]]["persistentVolumeClaim"]["claimName"] in claims


def _set(getter: Callable[[Docs], dict[str, Any]], key: str, value: Any) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        getter(docs)[key] = value

    return mutate


def _drop(getter: Callable[[Docs], dict[str, Any]], key: str) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        del getter(docs)[key]

    return mutate


def _rename(getter: Callable[[Docs], dict[str, Any]], old: str, new: str) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        target = getter(docs)
        target[new] = target.pop(old)

    return mutate


def _limits(docs: Docs) -> dict[str, Any]:
    return _worker_container(docs)["resources"]["limits"]


def _use_cluster_selector(docs: Docs) -> None:
    spec = _spec(docs)
    del spec["rayClusterSpec"]
    spec["clusterSelector"] = {"ray.io/cluster": "someone-elses-cluster"}


def _worker_groups_as_mapping(docs: Docs) -> None:
    _cluster(docs)["workerGroupSpecs"] = _worker_group(docs)


def _drop_head_mount(path: str) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        head = _head_container(docs)
        head["volumeMounts"] = [m for m in head["volumeMounts"] if m["mountPath"] != path]

    return mutate


def _drop_env(getter: Callable[[Docs], dict[str, Any]], name: str) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        container = getter(docs)
        container["env"] = [e for e in container["env"] if e["name"] != name]

    return mutate


def _set_env(getter: Callable[[Docs], dict[str, Any]], name: str, value: str) -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        container = getter(docs)
        container["env"] = [({**e, "value": value} if e["name"] == name else e) for e in container["env"]]

    return mutate


def _configmap(docs: Docs) -> dict[str, Any]:
    return next(d for d in docs if d.get("kind") == "ConfigMap")["data"]


BROKEN_RAYJOBS: list[tuple[str, Callable[[Docs], None], str]] = [
    # CRD schema: wrong types, misspelt and missing fields
    ("misspelt headGroupSpec", _rename(_cluster, "headGroupSpec", "headGroupSpc"),
     r"spec\.rayClusterSpec: 'headGroupSpec' is a required property.*'headGroupSpc' was unexpected"),
    ("misspelt spec field", _rename(_spec, "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
     r"spec: .*'shutdownAfterJobFinish' was unexpected"),
    ("misspelt container field", _rename(_worker_container, "image", "imagee"),
     r"workerGroupSpecs\[0\]\.template\.spec\.containers\[0\]: .*'imagee' was unexpected"),
    ("workerGroupSpecs not a list", _worker_groups_as_mapping,
     r"spec\.rayClusterSpec\.workerGroupSpecs: a dict is not of type 'array'"),
    ("replicas as string", _set(_worker_group, "replicas", "8"),
     r"workerGroupSpecs\[0\]\.replicas: '8' is not of type 'integer'"),
    ("missing groupName", _drop(_worker_group, "groupName"),
     r"workerGroupSpecs\[0\]: 'groupName' is a required property"),
    ("bad cpu quantity", _set(_limits, "cpu", "eight"), r"resources\.limits\.cpu: 'eight' does not match"),
    ("shutdown flag as string", _set(_spec, "shutdownAfterJobFinishes", "yes"),
     r"spec\.shutdownAfterJobFinishes: 'yes' is not of type 'boolean'"),
    ("v1alpha1", _set(_rayjob, "apiVersion", "ray.io/v1alpha1"), r"apiVersion must be 'ray\.io/v1'"),
    # personamine's own invariants
    ("entrypointNumCpus missing", _drop(_spec, "entrypointNumCpus"), r"spec\.entrypointNumCpus must be set"),
    ("entrypointNumCpus zero", _set(_spec, "entrypointNumCpus", 0), r"spec\.entrypointNumCpus must be > 0"),
    ("driver GPU", _set(_spec, "entrypointNumGpus", 1), r"spec\.entrypointNumGpus must be unset or 0"),
    ("driver GPU via resources", _set(_spec, "entrypointResources", '{"GPU": 1}'),
     r"entrypointResources must not request GPUs"),
    ("entrypointResources not JSON", _set(_spec, "entrypointResources", "GPU=1"),
     r"entrypointResources is not valid JSON"),
    ("driver resource advertised nowhere", _drop(_head_params, "resources"),
     r"entrypointResources asks for personamine_driver, which no head or worker group advertises"),
    ("head resources not JSON", _set(_head_params, "resources", "x=1"),
     r"headGroupSpec: rayStartParams\.resources is not a JSON object"),
    ("latest worker image", _set(_worker_container, "image", "rayproject/ray:latest-gpu"),
     r"workerGroupSpecs\[0\]\.template\.spec\.containers\[0\]\.image: image 'rayproject/ray:latest-gpu' "
     r"is not pinned to the tested Ray " + re.escape(TESTED_RAY_VERSION)),
    ("other head image version", _set(_head_container, "image", "rayproject/ray:2.59.0-py311-gpu"),
     r"headGroupSpec\.template\.spec\.containers\[0\]\.image: .*not pinned"),
    ("untagged head image", _set(_head_container, "image", "registry.local:5000/ray"), r"not pinned"),
    ("release-candidate tag", _set(_head_container, "image", f"rayproject/ray:{TESTED_RAY_VERSION}rc1"),
     r"not pinned"),
    ("rayVersion mismatch", _set(_cluster, "rayVersion", "2.59.0"),
     r"spec\.rayClusterSpec\.rayVersion is '2\.59\.0'"),
    ("no own cluster", _use_cluster_selector, r"spec\.rayClusterSpec is missing"),
    ("job.toml not TOML", _set(_configmap, "job.toml", "model = [1,\n"),
     r"ConfigMap 'personamine-job-config'\): data\.job\.toml is not valid TOML"),
    ("corpus mounted on workers only", _drop_head_mount("/corpus"),
     r"workerGroupSpecs\[0\]\.template\.spec\.containers\[0\]: mounts '/corpus' but the head does not"),
    ("no hub cache", _drop_env(_worker_container, "HF_HOME"),
     r"workerGroupSpecs\[0\].*HF_HOME must be set to a path on a mounted volume"),
    ("hub cache off the volumes", _set_env(_head_container, "HF_HOME", "/root/.cache/huggingface"),
     r"headGroupSpec.*HF_HOME must be set to a path on a mounted volume.*'/root/\.cache/huggingface'"),
]


@pytest.mark.parametrize(("mutate", "pattern"), [(m, p) for _, m, p in BROKEN_RAYJOBS],
                         ids=[name for name, _, _ in BROKEN_RAYJOBS])
def test_broken_rayjob_fails(tmp_path: Path, mutate: Callable[[Docs], None], pattern: str) -> None:
    docs = _rayjob_docs()
    mutate(docs)
    _expect_error(validate_rayjob_manifest, _write_docs(tmp_path, docs), pattern)


def test_entrypoint_num_cpus_word_fails_against_the_crd(tmp_path: Path) -> None:
    path = _write_text_edit(tmp_path, RAYJOB, "entrypointNumCpus: 1\n", 'entrypointNumCpus: "one"\n')
    message = _expect_error(validate_rayjob_manifest, path,
                            r"document 1 \(RayJob 'personamine-mine'\): spec\.entrypointNumCpus: "
                            r"'one' is not of type 'number'")
    assert f"KubeRay {KUBERAY_VERSION}" in message


ACCEPTED_RAYJOBS: list[tuple[str, Callable[[Docs], None]]] = [
    # The API server fills defaults before checking `required`, so these stay valid there too.
    ("maxReplicas defaulted", _drop(_worker_group, "maxReplicas")),
    # ...and drops `field: null` (an empty YAML key) for non-nullable fields.
    ("empty tolerations key", _set(lambda d: _worker_group(d)["template"]["spec"], "tolerations", None)),
    ("digest after pinned tag",
     _set(_head_container, "image", f"rayproject/ray:{TESTED_RAY_VERSION}-py311-gpu@sha256:{'0' * 64}")),
    ("bare version tag", _set(_worker_container, "image", f"my.registry/ray:{TESTED_RAY_VERSION}")),
    ("explicit zero driver GPUs", _set(_spec, "entrypointNumGpus", 0)),
    # The escaped form KubeRay's own samples use for rayStartParams.resources.
    ("escaped resources JSON",
     _set(_head_params, "resources", '"{\\"personamine_driver\\": 1}"')),
    ("fractional driver CPUs", _set(_spec, "entrypointNumCpus", 0.5)),
]


@pytest.mark.parametrize("mutate", [m for _, m in ACCEPTED_RAYJOBS], ids=[n for n, _ in ACCEPTED_RAYJOBS])
def test_kubernetes_valid_variants_pass(tmp_path: Path, mutate: Callable[[Docs], None]) -> None:
    docs = _rayjob_docs()
    mutate(docs)
    validate_rayjob_manifest(_write_docs(tmp_path, docs))


def test_manifest_without_rayjob_fails(tmp_path: Path) -> None:
    docs = [d for d in _rayjob_docs() if d.get("kind") != "RayJob"]
    _expect_error(validate_rayjob_manifest, _write_docs(tmp_path, docs), r"no RayJob document found")


def test_invalid_yaml_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: ray.io/v1\nkind: RayJob\nspec: [unclosed\n")
    _expect_error(validate_rayjob_manifest, path, r"invalid YAML")


def test_missing_file_fails(tmp_path: Path) -> None:
    _expect_error(validate_rayjob_manifest, tmp_path / "absent.yaml", r"cannot read")


def test_stored_crd_schema_is_the_pinned_kuberay_release() -> None:
    data = configs._schema_data()
    source = data["_source"]
    assert source["tag"] == KUBERAY_VERSION
    assert source["license"] == "Apache-2.0"
    assert source["repository"] == "https://github.com/ray-project/kuberay"
    schema = data["openAPIV3Schema"]
    jsonschema.Draft4Validator.check_schema(schema)
    spec = schema["properties"]["spec"]["properties"]
    assert spec["entrypointNumCpus"]["type"] == "number"
    assert spec["rayClusterSpec"]["required"] == ["headGroupSpec"]


def test_tested_ray_version_matches_the_package_pins() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = {
        match.group(1)
        for extra in pyproject["project"]["optional-dependencies"].values()
        for requirement in extra
        if (match := re.fullmatch(r"ray(?:\[[^\]]*\])?==(\S+)", requirement.replace(" ", "")))
    }
    assert pins == {TESTED_RAY_VERSION}


# --------------------------------------------------------------------------------------------------
# Ray cluster launcher (`ray up`)


def _launcher() -> dict[str, Any]:
    return yaml.safe_load(LAUNCHER.read_text())


def _write_launcher(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_shipped_launcher_config_validates() -> None:
    validate_launcher_config(LAUNCHER)


def test_shipped_launcher_config_shape() -> None:
    config = _launcher()
    assert config["docker"]["image"] == f"rayproject/ray:{TESTED_RAY_VERSION}-py311-gpu"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert [(w["min_workers"], w["resources"]["GPU"]) for w in workers] == [(0, 1)]
    assert workers[0]["max_workers"] <= config["max_workers"]
    assert any("pip install" in c and "personamine[ray]" in c for c in config["setup_commands"])
    # Ray fills missing top-level keys from the provider's defaults.yaml, whose setup commands install
    # a nightly Ray wheel; spelling every command list out keeps the pinned image's Ray in charge.
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, key
    # One container config for head and workers: the same /corpus and a hub cache on the host's disk on every node.
    options = " ".join(config["docker"]["run_options"])
    assert "-e HF_HOME=/home/ray/cache/" in options and "-v /mnt/personamine-cache:/home/ray/cache" in options
    assert "-v /mnt/personamine-corpus:/corpus:ro" in options
    assert "head_run_options" not in config["docker"] and "worker_run_options" not in config["docker"]


def _set_top(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.__setitem__(key, value)


def _gpu_worker(config: dict[str, Any]) -> dict[str, Any]:
    return config["available_node_types"]["gpu_worker"]


BROKEN_LAUNCHERS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    # Ray's own schema and checks
    ("negative max_workers", _set_top("max_workers", -1), r"max_workers: -1 is less than the minimum of 0"),
    ("unknown top-level key", _set_top("max_worker", 8), r"\(top level\): .*'max_worker' was unexpected"),
    ("unknown docker key", lambda c: c["docker"].__setitem__("imagee", "x"),
     r"docker: .*'imagee' was unexpected"),
    ("head type not defined", _set_top("head_node_type", "ray.head.missing"),
     r"`head_node_type` must be one of `available_node_types`"),
    ("node type without resources", lambda c: _gpu_worker(c).pop("resources"),
     r"available_node_types\.gpu_worker: 'resources' is a required property"),
    ("fractional GPU resource", lambda c: _gpu_worker(c)["resources"].__setitem__("GPU", 0.5),
     r"resources\.GPU: 0\.5 is not of type 'integer'"),
    ("min_workers above max_workers", lambda c: _gpu_worker(c).__setitem__("min_workers", 1000),
     r"global `max_workers` is smaller than the sum of `min_workers`"),
    ("unknown provider", lambda c: c["provider"].__setitem__("type", "nimbus"),
     r"provider\.type: Unsupported node provider: nimbus"),
    ("no provider", lambda c: c.pop("provider"), r"provider\.type is required"),
    ("kuberay provider", lambda c: c.__setitem__("provider", {"type": "kuberay"}), r"not a ray up config"),
    # the image pin
    ("unpinned image", lambda c: c["docker"].__setitem__("image", "rayproject/ray:latest-gpu"),
     r"docker\.image: image 'rayproject/ray:latest-gpu' is not pinned to the tested Ray"),
    ("unpinned per-node image",
     lambda c: _gpu_worker(c).__setitem__("docker", {"worker_image": "rayproject/ray:2.59.0-py311-gpu"}),
     r"available_node_types\.gpu_worker\.docker\.worker_image: .*not pinned"),
    ("no container at all", lambda c: c.pop("docker"), r"docker\.image must be set"),
]


@pytest.mark.parametrize(("mutate", "pattern"), [(m, p) for _, m, p in BROKEN_LAUNCHERS],
                         ids=[name for name, _, _ in BROKEN_LAUNCHERS])
def test_broken_launcher_config_fails(tmp_path: Path, mutate: Callable[[dict[str, Any]], None],
                                      pattern: str) -> None:
    config = _launcher()
    mutate(config)
    _expect_error(validate_launcher_config, _write_launcher(tmp_path, config), pattern)


def test_launcher_unpinned_image_text_edit_fails(tmp_path: Path) -> None:
    path = _write_text_edit(tmp_path, LAUNCHER, f"image: rayproject/ray:{TESTED_RAY_VERSION}-py311-gpu",
                            "image: rayproject/ray:latest-py311-gpu")
    _expect_error(validate_launcher_config, path, r"not pinned to the tested Ray")


def test_launcher_validation_leaves_the_file_alone(tmp_path: Path) -> None:
    path = _write_launcher(tmp_path, _launcher())
    before = path.read_text()
    validate_launcher_config(path)
    assert path.read_text() == before
