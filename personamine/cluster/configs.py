"""Offline checks for the cluster configs shipped in ``cluster/``.

Both checks run without a Kubernetes API server, cloud credentials or network access, so they can
gate CI and catch a broken manifest before it costs a cluster start:

* :func:`validate_rayjob_manifest` checks each KubeRay ``RayJob`` document against the RayJob CRD
  schema of the pinned KubeRay release (stored in ``schemas/rayjob-crd-schema.json``), the way the
  API server would with strict field validation, then checks personamine's own invariants.
* :func:`validate_launcher_config` runs Ray's own ``ray up`` preflight (``prepare_config`` then
  ``validate_config``) and the same image pin check.

Both raise ``ValueError`` with a one-line message naming the file and the offending field.
"""

from __future__ import annotations

import copy
import functools
import json
import tomllib
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

TESTED_RAY_VERSION = "2.60.0"
# Must equal the tag recorded in the schema file's _source; the tests check both agree.
KUBERAY_VERSION = "v1.7.0"

_CRD_SCHEMA_FILE = "rayjob-crd-schema.json"
_MAX_MESSAGE = 240
# Resources Ray defines on every node by itself; anything else must be advertised explicitly.
_BUILTIN = frozenset({"CPU", "GPU", "MEMORY", "OBJECT_STORE_MEMORY"})


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _one_line(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _image_tag(image: str) -> str | None:
    # A digest (@sha256:...) pins bytes, not a readable version, so only the tag is compared.
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _check_image_pin(image: Any, where: str) -> None:
    if not isinstance(image, str) or not image:
        raise ValueError(f"{where}: no container image set")
    tag = _image_tag(image)
    # Ray images are tagged <version>[-<variant>], e.g. 2.60.0-py311-gpu; a bare "latest" or another
    # version would silently run a Ray the code was never tested against.
    if tag is None or not (tag == TESTED_RAY_VERSION or tag.startswith(TESTED_RAY_VERSION + "-")):
        raise ValueError(
            f"{where}: image {image!r} is not pinned to the tested Ray {TESTED_RAY_VERSION} "
            f"(want tag '{TESTED_RAY_VERSION}' or '{TESTED_RAY_VERSION}-<variant>')"
        )


def _load_yaml_documents(path: Path) -> list[Any]:
    try:
        with path.open(encoding="utf-8") as f:
            return list(yaml.safe_load_all(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {_one_line(e)}") from e


# --------------------------------------------------------------------------------------------------
# KubeRay RayJob


def _schema_data() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schemas", _CRD_SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _kubernetes_strict(node: Any) -> Any:
    """Make a CRD structural schema behave, under plain JSON Schema, as the API server does.

    jsonschema alone is laxer than Kubernetes in two ways and stricter in one:
    * unknown fields: the API server rejects them under strict field validation (kubectl's default),
      but a CRD schema has no ``additionalProperties: false``, so a misspelt field would pass;
    * ``required`` fields that carry a ``default``: the API server fills the default in before
      validating, so they are optional in practice (e.g. a worker group's ``maxReplicas``);
    * ``nullable: true`` is OpenAPI, not JSON Schema.
    """
    if isinstance(node, list):
        return [_kubernetes_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    props = node.get("properties")
    if isinstance(props, dict):
        out["properties"] = {name: _kubernetes_strict(sub) for name, sub in props.items()}
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if "required" in node:
            defaulted = {name for name, sub in props.items() if isinstance(sub, dict) and "default" in sub}
            out["required"] = [name for name in node["required"] if name not in defaulted]
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _kubernetes_strict(node["additionalProperties"])
    if isinstance(node.get("items"), dict | list):
        out["items"] = _kubernetes_strict(node["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(node.get(key), list):
            out[key] = _kubernetes_strict(node[key])
    if isinstance(node.get("not"), dict):
        out["not"] = _kubernetes_strict(node["not"])
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


def _prune_nulls(node: Any) -> Any:
    # The API server drops `field: null` for non-nullable fields before validating, so an empty
    # YAML key (e.g. `tolerations:` with nothing under it) is accepted there and must be here.
    if isinstance(node, dict):
        return {k: _prune_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_prune_nulls(item) for item in node]
    return node


@functools.cache
def _rayjob_validator() -> jsonschema.protocols.Validator:
    schema = _kubernetes_strict(_schema_data()["openAPIV3Schema"])
    # OpenAPI 3.0 schema objects are closest to draft 4 (e.g. boolean exclusiveMinimum); format is
    # left unchecked, as the API server only checks a few formats anyway.
    return jsonschema.Draft4Validator(schema)


def _describe_schema_error(error: jsonschema.ValidationError) -> str:
    # jsonschema's own type message embeds the whole instance, which for a pod template is pages long.
    if error.validator == "type" and isinstance(error.instance, dict | list):
        return f"a {type(error.instance).__name__} is not of type {error.validator_value!r}"
    return _one_line(error.message)


def _pod_containers(template: Any) -> list[Any]:
    if not isinstance(template, dict):
        return []
    containers = (template.get("spec") or {}).get("containers")
    return containers if isinstance(containers, list) else []


def _ray_images(spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(field path, image) for each container that runs Ray or the Ray CLI."""
    cluster = spec.get("rayClusterSpec") or {}
    # KubeRay treats the first container of a group's pod template as the Ray container; later
    # ones are sidecars with their own versioning, so only the first is held to the Ray pin.
    head = _pod_containers((cluster.get("headGroupSpec") or {}).get("template"))
    if head:
        yield "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].image", head[0].get("image")
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        workers = _pod_containers(group.get("template"))
        if workers:
            yield (
                f"spec.rayClusterSpec.workerGroupSpecs[{i}].template.spec.containers[0].image",
                workers[0].get("image"),
            )
    # The submitter pod runs `ray job submit`; by default KubeRay gives it the head image.
    submitter = _pod_containers(spec.get("submitterPodTemplate"))
    if submitter:
        yield "spec.submitterPodTemplate.spec.containers[0].image", submitter[0].get("image")


def _advertised_resources(group: Any, where: str) -> set[str]:
    """Custom Ray resource names a head/worker group advertises."""
    if not isinstance(group, dict):
        return set()
    names = set(group.get("resources") or {})  # the group-level field of KubeRay >= 1.5
    raw = (group.get("rayStartParams") or {}).get("resources")
    if raw:
        # Same leniency as KubeRay: strip the shell quoting around the JSON; also accept the older
        # documented form with backslash-escaped inner quotes.
        text = str(raw).strip("'\"` ")
        for candidate in (text, text.replace('\\"', '"')):
            try:
                parsed = json.loads(candidate)
                break
            except json.JSONDecodeError:
                continue
        else:
            raise ValueError(f"{where}: rayStartParams.resources is not a JSON object: {raw!r}")
        if not isinstance(parsed, dict):
            raise ValueError(f"{where}: rayStartParams.resources is not a JSON object: {raw!r}")
        names |= set(parsed)
    return names


def _check_driver_resources_exist(cluster: dict[str, Any], wanted: dict[str, Any], where: str) -> None:
    # A custom resource no node advertises leaves the driver pending until activeDeadlineSeconds.
    prefix = f"{where}: spec.rayClusterSpec"
    advertised = _advertised_resources(cluster.get("headGroupSpec"), f"{prefix}.headGroupSpec")
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        advertised |= _advertised_resources(group, f"{prefix}.workerGroupSpecs[{i}]")
    missing = sorted(k for k, v in wanted.items() if v and k not in advertised and k.upper() not in _BUILTIN)
    if missing:
        raise ValueError(
            f"{where}: spec.entrypointResources asks for {', '.join(missing)}, which no head or worker "
            "group advertises (rayStartParams.resources), so the driver would never be scheduled"
        )


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m.get("mountPath"): m.get("name") for m in container.get("volumeMounts") or []}


def _check_hub_cache(container: dict[str, Any], where: str) -> None:
    env = {e.get("name"): e.get("value") for e in container.get("env") or []}
    home = env.get("HF_HOME")
    # Without a cache on a volume, every pod downloads the model (~8 GB for Llama-3.1-8B) and the SAE itself.
    if not home or not any(str(home).startswith(str(path).rstrip("/") + "/") or home == path
                           for path in _mounts(container)):
        raise ValueError(f"{where}: HF_HOME must be set to a path on a mounted volume (the shared hub cache), "
                         f"got {home!r}")


def _check_shared_paths(cluster: dict[str, Any], where: str) -> None:
    """The driver (on the head) plans a local corpus from its footers and the actors read its units from the same
    paths, so every volume a worker mounts (but /dev/shm) must be mounted at the same path on the head."""
    head = _pod_containers((cluster.get("headGroupSpec") or {}).get("template"))
    if not head:
        return
    head_paths = _mounts(head[0])
    _check_hub_cache(head[0], f"{where}: spec.rayClusterSpec.headGroupSpec.template.spec.containers[0]")
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        workers = _pod_containers(group.get("template"))
        if not workers:
            continue
        field = f"{where}: spec.rayClusterSpec.workerGroupSpecs[{i}].template.spec.containers[0]"
        _check_hub_cache(workers[0], field)
        for path in sorted(p for p in _mounts(workers[0]) if p != "/dev/shm"):
            if path not in head_paths:
                raise ValueError(f"{field}: mounts {path!r} but the head does not: the driver reads a local "
                                 "corpus's footers from the same paths its actors read units from")


def _check_rayjob_invariants(doc: dict[str, Any], where: str) -> None:
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: spec is missing")
    if not isinstance(spec.get("rayClusterSpec"), dict):
        raise ValueError(
            f"{where}: spec.rayClusterSpec is missing; the job must bring its own RayCluster so its "
            "Ray image can be pinned and checked"
        )

    cpus = spec.get("entrypointNumCpus")
    # Without it Ray pins the driver to the head with no CPU reserved, so CPU tasks can crowd it out.
    if cpus is None:
        raise ValueError(f"{where}: spec.entrypointNumCpus must be set (personamine's driver uses 1)")
    if cpus <= 0:
        raise ValueError(f"{where}: spec.entrypointNumCpus must be > 0, got {cpus!r}")
    # A GPU reserved for the driver is a GPU no mining actor can use, for the whole run.
    gpus = spec.get("entrypointNumGpus")
    if gpus not in (None, 0):
        raise ValueError(f"{where}: spec.entrypointNumGpus must be unset or 0, got {gpus!r}")
    if "entrypointResources" in spec:
        try:
            extra = json.loads(spec["entrypointResources"])
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: spec.entrypointResources is not valid JSON: {e.msg}") from e
        if not isinstance(extra, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in extra.values()
        ):
            raise ValueError(f"{where}: spec.entrypointResources must be a JSON object of numbers")
        if any(str(k).upper() == "GPU" and v for k, v in extra.items()):
            raise ValueError(f"{where}: spec.entrypointResources must not request GPUs for the driver")
        _check_driver_resources_exist(spec["rayClusterSpec"], extra, where)

    ray_version = spec["rayClusterSpec"].get("rayVersion")
    if ray_version is not None and ray_version != TESTED_RAY_VERSION:
        raise ValueError(
            f"{where}: spec.rayClusterSpec.rayVersion is {ray_version!r}, want {TESTED_RAY_VERSION!r}"
        )
    images = list(_ray_images(spec))
    if not images:
        raise ValueError(f"{where}: spec.rayClusterSpec.headGroupSpec has no containers")
    for field, image in images:
        _check_image_pin(image, f"{where}: {field}")
    _check_shared_paths(spec["rayClusterSpec"], where)


def _check_configmap(doc: dict[str, Any], where: str) -> None:
    # The run config travels in a ConfigMap; a TOML typo would otherwise surface only after the
    # GPU pods have been scheduled and the driver starts.
    for key, value in (doc.get("data") or {}).items():
        if str(key).endswith(".toml"):
            try:
                tomllib.loads(value if isinstance(value, str) else "")
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{where}: data.{key} is not valid TOML: {_one_line(e)}") from e


def validate_rayjob_manifest(path: str | Path) -> None:
    """Validate every ``RayJob`` in a (multi-document) YAML manifest; raise ``ValueError`` on the first
    problem. Other documents are ignored, except that ConfigMap ``*.toml`` entries must parse."""
    path = Path(path)
    docs = _load_yaml_documents(path)
    validator = _rayjob_validator()
    found = 0
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: document {index} is not a mapping")
        kind = doc.get("kind")
        metadata = doc.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        where = f"{path}: document {index} ({kind}{f' {name!r}' if name else ''})"
        if kind == "ConfigMap":
            _check_configmap(doc, where)
        if kind != "RayJob":
            continue
        found += 1
        # The stored schema is the ray.io/v1 one; v1alpha1 is deprecated and has other fields.
        if doc.get("apiVersion") != "ray.io/v1":
            raise ValueError(f"{where}: apiVersion must be 'ray.io/v1', got {doc.get('apiVersion')!r}")
        if not name:
            raise ValueError(f"{where}: metadata.name is required")
        errors = list(validator.iter_errors(_prune_nulls(doc)))
        error = jsonschema.exceptions.best_match(errors)
        if error is not None:
            message = _describe_schema_error(error)
            if error.validator == "required":
                # A misspelt required field shows up twice; naming the unexpected spelling too
                # points straight at the typo.
                for other in errors:
                    same_place = other.absolute_path == error.absolute_path
                    if same_place and other.validator == "additionalProperties":
                        message += f"; {_describe_schema_error(other)}"
            raise ValueError(
                f"{where}: {_field_path(error.absolute_path)}: {_one_line(message)} "
                f"(KubeRay {KUBERAY_VERSION} RayJob CRD)"
            )
        _check_rayjob_invariants(doc, where)
    if not found:
        raise ValueError(f"{path}: no RayJob document found")


# --------------------------------------------------------------------------------------------------
# Ray cluster launcher (`ray up`)


def _launcher_images(config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    docker = config.get("docker") or {}
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            yield f"docker.{key}", docker[key]
    for name, node_type in (config.get("available_node_types") or {}).items():
        override = (node_type.get("docker") or {}) if isinstance(node_type, dict) else {}
        if "worker_image" in override:
            yield f"available_node_types.{name}.docker.worker_image", override["worker_image"]


def validate_launcher_config(path: str | Path) -> None:
    """Run Ray's offline ``ray up`` checks on a cluster launcher YAML plus the image pin check; raise
    ``ValueError`` on the first problem."""
    # Imported here: ray is an optional extra and slow to import.
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    docs = [d for d in _load_yaml_documents(path) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ValueError(f"{path}: expected a single YAML mapping")
    config = docs[0]
    provider = config.get("provider")
    if not isinstance(provider, dict) or "type" not in provider:
        raise ValueError(f"{path}: provider.type is required")
    # prepare_config returns a kuberay config untouched (KubeRay generates the real one), so
    # validate_config would only fail with a misleading version-skew message.
    if provider["type"] == "kuberay":
        raise ValueError(f"{path}: provider.type 'kuberay' is not a ray up config; use a RayJob manifest")

    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except jsonschema.ValidationError as e:
        raise ValueError(f"{path}: {_field_path(e.absolute_path)}: {_describe_schema_error(e)}") from e
    except NotImplementedError as e:
        raise ValueError(f"{path}: provider.type: {_one_line(e)}") from e
    except KeyError as e:
        raise ValueError(f"{path}: missing key {e.args[0]!r}") from e
    except (ValueError, AssertionError, RuntimeError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: {_one_line(e) or type(e).__name__}") from e

    images = list(_launcher_images(prepared))
    docker = prepared.get("docker") or {}
    # Without a container the nodes run whatever Ray the machine image has, which nothing pins.
    if not docker.get("image") and not (docker.get("head_image") and docker.get("worker_image")):
        raise ValueError(f"{path}: docker.image must be set so the cluster runs Ray {TESTED_RAY_VERSION}")
    for field, image in images:
        _check_image_pin(image, f"{path}: {field}")


__all__ = [
    "KUBERAY_VERSION",
    "TESTED_RAY_VERSION",
    "validate_launcher_config",
    "validate_rayjob_manifest",
]
