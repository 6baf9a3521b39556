"""The deployment's rules, checked without a container engine (scripts/check-compose runs
this with the Python of Debian's docker-compose package, whose modules it uses).

    check-compose.py SCHEMA COMPOSE_FILE [OVERRIDE_FILE...]    check the repository's files
    check-compose.py SCHEMA --self-test COMPOSE_FILE [...]     prove every rule can fail

SCHEMA is the Compose specification's JSON schema. Each file must match it on its own; the
rules below are checked against the files merged as `docker compose -f … -f …` merges them
(services' keys replaced, lists of volumes merged by their target), with the Dockerfile:

- every path a service of the image mounts, or names as its storage or backup folder, is
  created in the runtime image and owned by its (non-root) user, so a named volume mounted
  there is writable by the service;
- every long-running service has a restart policy and a health check, and the service's
  own binaries are checked by their `health` subcommand;
- a service with replicas (the workers, scaled with `--scale worker=N`) has no container
  name and publishes no host port, which would stop a second replica from starting;
- base images are pinned (the Rust image to a full version, none `latest`) and the image's
  binaries are stripped;
- the Dockerfile's dependency layer builds every workspace member and every target path
  the manifests name, so the cached layer cannot drift from the workspace.
"""

import copy
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path, PurePosixPath

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
BINARIES = ("stayler-api", "stayler-worker", "stayler-scheduler")
# The folders each binary writes (the API never touches backups; the scheduler no file).
FOLDER_VARIABLES = {
    "stayler-api": ("STAYLER_STORAGE__BASE_PATH",),
    "stayler-worker": ("STAYLER_STORAGE__BASE_PATH", "STAYLER_STORAGE__BACKUP_PATH"),
}


class Dockerfile:
    """What the rules need from the Dockerfile: its stages' base images and, for the
    runtime (last) stage, its user, created and owned folders, binaries and environment."""

    def __init__(self, text):
        self.text = text
        lines = re.sub(r"\\\n", " ", text).splitlines()
        self.stages = []  # (image, [instructions])
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            if word.upper() == "FROM":
                self.stages.append((rest.split()[0], []))
            elif self.stages:
                self.stages[-1][1].append((word.upper(), rest.strip()))

    def runtime(self):
        return self.stages[-1][1]

    def user(self):
        users = [rest for word, rest in self.runtime() if word == "USER"]
        return users[-1] if users else "root"

    def shell_words(self, stage):
        """Every simple command of the RUN instructions of a stage, as word lists."""
        for word, rest in stage:
            if word == "RUN":
                for command in re.split(r"&&|;", rest):
                    yield shlex.split(command)

    def created(self):
        return {PurePosixPath(w) for words in self.shell_words(self.runtime()) if words[:2] == ["mkdir", "-p"] for w in words[2:]}

    def owned(self):
        owned = set()
        for words in self.shell_words(self.runtime()):
            if words[:2] == ["chown", "-R"] and len(words) > 3:
                owned |= {PurePosixPath(w) for w in words[3:]}
        return owned

    def environment(self, stage):
        env = {}
        for word, rest in stage:
            if word == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    env[key] = value
        return env

    def copied_binaries(self):
        return {Path(w).name for word, rest in self.runtime() if word == "COPY" for w in rest.split() if w.startswith("/usr/local/bin/stayler-")}


def under(path, folders):
    return any(path == folder or folder in path.parents for folder in folders)


def merge(files):
    """The files merged as Compose merges them: mappings key by key, a service's volumes by
    their container path, every other list replaced."""
    merged = {}
    for document in files:
        for key, value in document.items():
            if key == "services":
                services = merged.setdefault("services", {})
                for name, service in value.items():
                    into = services.setdefault(name, {})
                    for field, setting in service.items():
                        if field == "volumes" and "volumes" in into:
                            by_target = {volume_target(v): v for v in into["volumes"]}
                            by_target.update({volume_target(v): v for v in setting})
                            into["volumes"] = list(by_target.values())
                        elif isinstance(setting, dict) and isinstance(into.get(field), dict):
                            into[field] = {**into[field], **setting}
                        else:
                            into[field] = setting
            elif isinstance(value, dict):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


def volume_target(volume):
    if isinstance(volume, dict):
        return volume["target"]
    parts = volume.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def builds_image(service):
    return "build" in service


def service_binary(service):
    command = service.get("command") or ["stayler-api"]
    if isinstance(command, str):
        command = shlex.split(command)
    return command[0]


def is_one_shot(service):
    return str(service.get("restart", "")) == "no"


def check_schema(schema, name, document):
    validator = jsonschema.Draft7Validator(schema)
    return [f"{name}: {'/'.join(map(str, error.path)) or '(top)'}: {error.message}" for error in validator.iter_errors(document)]


def check_rules(compose, dockerfile, workspace):
    problems = []
    services = compose.get("services", {})
    user = dockerfile.user()
    if user.split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: the runtime stage runs as root (add a USER)")
    created, owned = dockerfile.created(), dockerfile.owned()
    binaries = dockerfile.copied_binaries()
    image_env = dockerfile.environment(dockerfile.runtime())

    for name, service in services.items():
        where = f"compose service {name}"
        if not is_one_shot(service):
            if not service.get("restart"):
                problems.append(f"{where}: no restart policy")
            if not service.get("healthcheck", {}).get("test"):
                problems.append(f"{where}: no health check")
        image = service.get("image", "")
        if image and not builds_image(service) and (":" not in image or image.endswith(":latest")):
            problems.append(f"{where}: image {image} is not pinned to a tag other than latest")
        scaled = service.get("deploy", {}).get("replicas", 1) != 1
        if scaled or (builds_image(service) and service_binary(service) == "stayler-worker"):
            if "container_name" in service:
                problems.append(f"{where}: a container name stops `--scale {name}=N` (names must be unique)")
            for port in service.get("ports", []):
                if ":" in str(port):
                    problems.append(f"{where}: the host port {port} stops a second replica from starting")
        if not builds_image(service):
            continue
        binary = service_binary(service)
        if binary not in binaries:
            problems.append(f"{where}: runs {binary}, which the image does not install")
        test = service.get("healthcheck", {}).get("test", [])
        if binary in BINARIES and list(test[1:3]) != [binary, "health"]:
            problems.append(f"{where}: the health check must run `{binary} health`")
        mounted = [PurePosixPath(volume_target(v)) for v in service.get("volumes", [])]
        for path in mounted:
            if not under(path, created) and not any(path in folder.parents for folder in created):
                problems.append(f"{where}: mounts {path}, which the image does not create")
            if not under(path, owned):
                problems.append(f"{where}: mounts {path}, which the image's user {user} does not own")
        environment = {**image_env, **(service.get("environment") or {})}
        for variable in FOLDER_VARIABLES.get(binary, ()):
            folder = environment.get(variable)
            if folder:
                folder = PurePosixPath(folder)
                if not under(folder, owned):
                    problems.append(f"{where}: {variable}={folder} is not owned by the image's user")
                if not under(folder, mounted):
                    problems.append(f"{where}: {variable}={folder} is on no volume (lost with the container)")

    for image, _ in dockerfile.stages:
        if image.endswith(":latest") or ":" not in image:
            problems.append(f"Dockerfile: base image {image} is not pinned")
        if image.startswith("rust:") and not re.match(r"rust:\d+\.\d+\.\d+", image):
            problems.append(f"Dockerfile: the Rust image {image} is not pinned to a full version")
    builder_env = dockerfile.environment(dockerfile.stages[0][1])
    if builder_env.get("CARGO_PROFILE_RELEASE_STRIP") != "symbols":
        problems.append("Dockerfile: the binaries are not stripped (CARGO_PROFILE_RELEASE_STRIP=symbols)")

    for member, manifest in workspace.items():
        if f"COPY {member}/Cargo.toml" not in dockerfile.text:
            problems.append(f"Dockerfile: the dependency layer does not copy {member}/Cargo.toml")
        for path in manifest_targets(member, manifest):
            if path not in dockerfile.text and not dummy_created(dockerfile.text, member, path):
                problems.append(f"Dockerfile: the dependency layer does not create {member}/{path}")
    return problems


def manifest_targets(member, manifest):
    targets = [manifest.get("lib", {}).get("path", "src/lib.rs")] if (ROOT / member / "src/lib.rs").exists() else []
    for kind in ("bin", "test", "bench"):
        targets += [t["path"] for t in manifest.get(kind, []) if "path" in t]
    return targets


def dummy_created(text, member, path):
    """Whether the dependency layer's loops create MEMBER/PATH: `for crate in … member …`
    with `"$crate/PATH"`, or the path written out."""
    if f"{member}/{path}" in text:
        return True
    for loop in re.finditer(r"for crate in ([^;]+); do ([^;]+);", text):
        if member in loop.group(1).split() and f"$crate/{path}" in loop.group(2):
            return True
    return False


def read_workspace():
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    return {member: tomllib.loads((ROOT / member / "Cargo.toml").read_text()) for member in members}


def self_test(compose, dockerfile, workspace):
    """Breaks the deployment one rule at a time and expects each break to be reported."""

    def broken_compose(change):
        broken = copy.deepcopy(compose)
        change(broken["services"])
        return broken

    compose_breaks = {
        "worker health check removed": lambda s: s["worker"].pop("healthcheck"),
        "scheduler restart policy removed": lambda s: s["scheduler"].pop("restart"),
        "worker publishes a host port": lambda s: s["worker"].__setitem__("ports", ["127.0.0.1:9101:9101"]),
        "worker has a container name": lambda s: s["worker"].__setitem__("container_name", "worker"),
        "api health check is a TCP probe": lambda s: s["api"]["healthcheck"].__setitem__("test", ["CMD", "true"]),
        "worker mounts a folder the image lacks": lambda s: s["worker"]["volumes"].append("spare:/spare"),
        "backups outside any volume": lambda s: s["worker"].__setitem__("volumes", ["storage:/data"]),
        "postgres unpinned": lambda s: s["postgres"].__setitem__("image", "postgres:latest"),
    }
    dockerfile_breaks = {
        "/backups not created": lambda t: t.replace("mkdir -p /data/storage /data/backups /backups", "mkdir -p /data/storage /data/backups"),
        "/backups not owned": lambda t: t.replace("chown -R stayler:stayler /data /backups", "chown -R stayler:stayler /data"),
        "runs as root": lambda t: t.replace("USER stayler", "USER root"),
        "Rust image unpinned": lambda t: re.sub(r"FROM rust:[^ ]+", "FROM rust:1-bookworm", t),
        "binaries not stripped": lambda t: t.replace("CARGO_PROFILE_RELEASE_STRIP=symbols", "CARGO_PROFILE_RELEASE_STRIP=none"),
        "a member's manifest not copied": lambda t: t.replace("COPY worker/Cargo.toml worker/", ""),
    }
    failures = []
    if problems := check_rules(compose, dockerfile, workspace):
        failures.append(f"the unbroken deployment is not clean: {problems}")
    for name, change in compose_breaks.items():
        if not check_rules(broken_compose(change), dockerfile, workspace):
            failures.append(f"not caught: {name}")
    for name, change in dockerfile_breaks.items():
        broken = change(dockerfile.text)
        if broken == dockerfile.text:
            failures.append(f"cannot break: {name} (the Dockerfile changed; update the self-test)")
        elif not check_rules(compose, Dockerfile(broken), workspace):
            failures.append(f"not caught: {name}")
    return failures, len(compose_breaks) + len(dockerfile_breaks)


def main(argv):
    schema = json.loads(Path(argv[1]).read_text())
    testing = argv[2:3] == ["--self-test"]
    names = argv[3:] if testing else argv[2:]
    documents = [yaml.safe_load((ROOT / name).read_text()) for name in names]
    problems = [p for name, document in zip(names, documents) for p in check_schema(schema, name, document)]
    dockerfile = Dockerfile((ROOT / "Dockerfile").read_text())
    compose, workspace = merge(documents), read_workspace()
    label = " + ".join(names)
    if testing:
        failures, breaks = self_test(compose, dockerfile, workspace)
        for failure in failures:
            print(f"self-test ({label}): {failure}", file=sys.stderr)
        if not failures:
            print(f"self-test ({label}): each of {breaks} broken rules was reported")
        return 1 if failures else 0
    problems += check_rules(compose, dockerfile, workspace)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{label}: matches the Compose specification and the deployment rules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
