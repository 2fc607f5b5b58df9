#!/usr/bin/env python3
"""Holds deploy/docker/Dockerfile.* to running only what CI runs.

Every RUN may invoke only scripts/install_deps.sh, scripts/build.sh and
deploy/docker/stage_runtime.sh (which scripts/test.sh and
tests/deploy/runtime_stage_test.py run in CI) or a trivial command (ldconfig,
useradd, mkdir, apt list cleanup). A change to what the image runs therefore
fails here until it is moved into one of those scripts (and so into CI).

Also checks that the images agree with each other and with the Helm chart:
the same steps in the same order, the stage copied into the runtime image is
the one the stage script writes, and the image's binary directory and user
are the chart's image.binDir and runAsUser.

  dockerfile_test.py --source .
"""

import argparse
import os
import re
import shlex
import sys
import unittest

import yaml

SOURCE = None
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.cuda")
SCRIPTS = ("scripts/install_deps.sh", "scripts/build.sh", "deploy/docker/stage_runtime.sh")
TRIVIAL = {"ldconfig", "useradd", "mkdir"}


def instructions(path):
  """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continued
  lines joined."""
  out, buf = [], ""
  with open(path) as f:
    for raw in f:
      line = raw.rstrip("\n")
      if not buf and (not line.strip() or line.lstrip().startswith("#")):
        continue
      if buf and line.lstrip().startswith("#"):
        continue  # a comment inside a continued instruction
      if line.endswith("\\"):
        buf += line[:-1] + " "
        continue
      buf += line
      word, _, rest = buf.strip().partition(" ")
      out.append((word.upper(), rest.strip()))
      buf = ""
  assert not buf, f"{path}: ends inside a continued line"
  return out


def commands(run):
  """The simple commands of a RUN (shell form), split at && ; and |."""
  assert not run.startswith("["), "exec-form RUN: use the shell form so this test can read it"
  parts = re.split(r"&&|;|\|\|?", run)
  return [shlex.split(p) for p in parts if p.strip()]


def allowed(argv):
  if argv[0] in SCRIPTS:
    return True
  if argv[0] in TRIVIAL:
    return True
  return argv[:2] == ["rm", "-rf"] and all(a.startswith("/var/lib/apt/lists") for a in argv[2:])


class DockerfileTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.files = {n: instructions(os.path.join(SOURCE, "deploy", "docker", n)) for n in DOCKERFILES}

  def test_every_run_invokes_only_ci_scripts_or_trivial_commands(self):
    for name, ins in self.files.items():
      runs = [a for i, a in ins if i == "RUN"]
      self.assertTrue(runs, name)
      for run in runs:
        for argv in commands(run):
          self.assertTrue(allowed(argv), f"{name}: RUN {run!r}: {argv[0]} is neither a CI script nor trivial")

  def test_scripts_exist_and_are_executable(self):
    for s in SCRIPTS:
      path = os.path.join(SOURCE, s)
      self.assertTrue(os.path.isfile(path) and os.access(path, os.X_OK), s)

  def test_both_images_run_the_same_steps(self):
    steps = {}
    for name, ins in self.files.items():
      steps[name] = [cmd[0] for i, a in ins if i == "RUN" for cmd in commands(a)]
    self.assertEqual(steps["Dockerfile.cpu"], list(SCRIPTS) + ["ldconfig", "useradd"])
    self.assertEqual(steps["Dockerfile.cuda"], steps["Dockerfile.cpu"])

  def test_build_and_stage_agree(self):
    for name, ins in self.files.items():
      runs = {commands(a)[0][0]: commands(a)[0] for i, a in ins if i == "RUN"}
      # build.sh builds into build/ (binaries in build/bin), without tests
      # (their packages are not installed in the image).
      self.assertIn("-DTANDEM_BUILD_TESTS=OFF", runs["scripts/build.sh"])
      self.assertEqual(runs["deploy/docker/stage_runtime.sh"][1:], ["build/bin", "/stage"])
      self.assertEqual(runs["scripts/install_deps.sh"], ["scripts/install_deps.sh"])  # no --test
      froms = [a for i, a in ins if i == "FROM"]
      self.assertEqual(len(froms), 2, name)
      self.assertTrue(froms[0].endswith(" AS build"), froms[0])
      copies = [a for i, a in ins if i == "COPY" and a.startswith("--from=")]
      self.assertEqual(copies, ["--from=build /stage/ /"])
    with open(os.path.join(SOURCE, "scripts", "build.sh")) as f:
      self.assertIn("-B build ", f.read())

  def test_images_match_the_chart(self):
    with open(os.path.join(SOURCE, "deploy", "helm", "tandem", "values.yaml")) as f:
      values = yaml.safe_load(f)
    for name, ins in self.files.items():
      env = [a for i, a in ins if i == "ENV"]
      self.assertEqual(env, [f"PATH={values['image']['binDir']}:${{PATH}}"], name)
      (useradd,) = [a for i, a in ins if i == "RUN" and a.startswith("useradd")]
      uid = shlex.split(useradd)[shlex.split(useradd).index("--uid") + 1]
      self.assertEqual(int(uid), values["podSecurityContext"]["runAsUser"])
      self.assertEqual([a for i, a in ins if i == "USER"], [uid])
    # The bundled model sits where the binaries look for it (bin/../../models)
    # and where the chart's default --model points.
    bin_dir = values["image"]["binDir"]
    self.assertEqual(values["model"]["path"],
                     os.path.join(os.path.dirname(os.path.dirname(bin_dir)), "models", "tandem-shakespeare"))
    with open(os.path.join(SOURCE, "deploy", "docker", "stage_runtime.sh")) as f:
      stage = f.read()
    self.assertIn(f'"$dest{bin_dir}/$b"', stage)

  def test_context_excludes_build_trees(self):
    with open(os.path.join(SOURCE, ".dockerignore")) as f:
      patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    for p in (".git", "build", "build-*"):
      self.assertIn(p, patterns)

  def test_commands_parser(self):
    self.assertEqual(commands("a b && c; d | e"), [["a", "b"], ["c"], ["d"], ["e"]])
    self.assertFalse(allowed(["apt-get", "install", "x"]))
    self.assertFalse(allowed(["rm", "-rf", "/"]))
    self.assertTrue(allowed(["rm", "-rf", "/var/lib/apt/lists/*"]))


def main():
  global SOURCE
  ap = argparse.ArgumentParser()
  ap.add_argument("--source", required=True)
  args, rest = ap.parse_known_args()
  SOURCE = os.path.abspath(args.source)
  unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
  main()
