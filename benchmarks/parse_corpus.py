"""How long the pure core takes on the public corpus: bytes → parsed mail → fitted → request.

Run: ``.venv/bin/python benchmarks/parse_corpus.py [--corpus ../shared/corpus] [--rounds 5]``. Every mail
file of the corpus and every message of its mbox files goes through ``parse_mail``, ``fit_mail`` and
``build_request`` (no I/O); the best of several rounds is reported, with the slowest mails.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import sys
import time
from pathlib import Path

from gateway.contact.fitting import fit_mail
from gateway.contact.request import StoredFile, build_request
from gateway.mail import Target
from gateway.message.mime import parse_mail
from gateway.settings import ContentPolicy, RouteSettings

ROOT = Path(__file__).resolve().parent.parent
TARGET = Target(RouteSettings(match="*", instance_id="bench"), "support@example.com")


def messages(corpus: Path) -> list[tuple[str, bytes]]:
    found = []
    listed = [line.split("\t")[0] for line in (corpus / "INDEX.tsv").read_text().splitlines()[1:] if line]
    for name in listed:
        path = corpus / name
        if path.parent.name in ("mailbox", "mbox") and path.stat().st_size > 3:
            box = mailbox.mbox(path)
            found += [(f"{name}#{key}", box.get_bytes(key)) for key in box.iterkeys()]
        else:
            found.append((name, path.read_bytes()))
    return found


def one(raw: bytes) -> None:
    fitted = fit_mail(parse_mail(raw), ContentPolicy())
    files = [StoredFile(name, "https://bucket.s3.amazonaws.com/key") for name in fitted.names]
    build_request(fitted, TARGET, raw, files, "sender@client.test")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    corpus = messages(args.corpus)
    size = sum(len(raw) for _, raw in corpus)
    rounds = []
    per_mail: dict[str, float] = {}
    for _ in range(args.rounds):
        began = time.perf_counter()
        for name, raw in corpus:
            start = time.perf_counter()
            one(raw)
            per_mail[name] = min(per_mail.get(name, float("inf")), time.perf_counter() - start)
        rounds.append(time.perf_counter() - began)
    best = min(rounds)
    slowest = sorted(per_mail.items(), key=lambda item: item[1], reverse=True)[:5]
    print(f"{len(corpus)} mails, {size / 1e6:.1f} MB: best of {args.rounds} rounds {best:.2f} s")
    rate, throughput, each = len(corpus) / best, size / 1e6 / best, best / len(corpus) * 1e3
    print(f"  {rate:.0f} mails/s, {throughput:.1f} MB/s, {each:.2f} ms a mail")
    for name, seconds in slowest:
        print(f"  slowest: {seconds * 1e3:7.1f} ms  {name}")
    print(json.dumps({"mails": len(corpus), "bytes": size, "best_seconds": best, "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
