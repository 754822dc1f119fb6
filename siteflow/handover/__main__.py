"""Command line: ``python -m siteflow.handover verify FILE [--key-file F] [--json]`` and ``keygen``.

``verify`` reads the hand-over file with every check that needs no config (format, manifest,
digest, and the signature when a key is given by ``--key-file`` or ``$SITEFLOW_HANDOVER_KEY``),
prints its manifest and exits 0; or prints why the file is refused and exits 1. Everything it
prints comes from the file or the command line, so every character that is not printable (a
newline, an escape sequence, ...) is printed escaped, as Python writes it in a string
(``\\n``): a line of its output is never forged by what the file holds.
``keygen`` prints a fresh random consortium key (64 hex digits).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

import torch

from siteflow.handover import HandoverError, HandoverWarning, Manifest, load_key, read_handover
from siteflow.handover.keys import generate_key


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m siteflow.handover", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a hand-over file and print its manifest")
    verify.add_argument("path", help="the hand-over file")
    verify.add_argument("--key-file", help="the consortium key (default: $SITEFLOW_HANDOVER_KEY, if set)")
    verify.add_argument("--json", action="store_true", help="print the manifest as JSON")
    commands.add_parser("keygen", help="print a fresh random consortium key")
    args = parser.parse_args(argv)

    if args.command == "keygen":
        print(generate_key())
        return 0
    try:
        key = load_key(args.key_file)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HandoverWarning)  # the signature status is printed below
            weights, manifest = read_handover(args.path, key=key)
    except HandoverError as error:
        print(f"refused: {_printable(str(error))}", file=sys.stderr)
        return 1
    if manifest.signature is None:
        signature = "unsigned"
    else:
        signature = "verified" if key is not None else "not verified (signed, but no key given)"
    if args.json:
        report = {"path": args.path, "signature": signature, "manifest": manifest.to_dict()}
        print(json.dumps(report, indent=2))
    else:
        print(_describe(args.path, manifest, weights, signature))
    return 0


def _describe(path: str, manifest: Manifest, weights: dict[str, torch.Tensor], signature: str) -> str:
    """The manifest of ``path`` in readable lines."""
    size = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    lines = [
        f"hand-over file {path}: OK",
        f"  format version  {manifest.format_version}",
        f"  strategy        {manifest.strategy}",
        f"  options         {_options(manifest)}",
        f"  model           {manifest.model_name} {json.dumps(manifest.model_kwargs, sort_keys=True)}",
        f"  weights         {len(weights)} tensors, {size:,} bytes, sha256 {manifest.weights_sha256}",
        f"  signature       {signature}",
        f"  sites so far    {len(manifest.sites)}, {sum(site.num_samples for site in manifest.sites)} samples",
    ]
    lines += [
        f"    {number}. task {site.task_id} {site.task_name}: {site.num_samples} samples, finished {site.finished_at}"
        for number, site in enumerate(manifest.sites, start=1)
    ]
    if manifest.extra:
        lines.append(f"  extra           {json.dumps(manifest.extra, sort_keys=True)}")
    return "\n".join(_printable(line) for line in lines)


def _options(manifest: Manifest) -> str:
    """The strategy options of ``manifest`` as one line."""
    if manifest.strategy_options is None:
        return "not recorded (written by an older siteflow)"
    return json.dumps(manifest.strategy_options, sort_keys=True)


def _printable(text: str) -> str:
    """``text`` with each character that is not printable escaped as Python escapes it (``\\n``)."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


if __name__ == "__main__":
    sys.exit(main())
