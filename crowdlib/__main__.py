"""Command-line entry.

* ``python -m crowdlib ledger [--json] [--chapter NAME]``: the reproduction ledger.
* ``python -m crowdlib execute [--chapter NAME ...] [--experiment NAME ...] [--store] [--force]
  [--jobs N]``: execute the chapters and experiments that changed since their last execution
  (see :func:`crowdlib.book.execute_chapter`).
* ``python -m crowdlib figures [--chapter NAME ...] [--out DIR] [--format png|svg]``: redraw every
  figure without Jupyter, with an index (file, chapter, section, caption).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import ledger


def _ledger(args: argparse.Namespace) -> int:
    directory = args.dir
    rows = ledger.load_all(directory)
    if args.chapter:
        rows = [r for r in rows if r.chapter == args.chapter]
        if not rows:
            known = sorted({r.chapter for r in ledger.load_all(directory)})
            print(f"no ledger for chapter {args.chapter!r}; chapters: {', '.join(known)}",
                  file=sys.stderr)
            return 2
    if args.json:
        json.dump([r.public() for r in rows], sys.stdout, indent=1, ensure_ascii=False)
        print()
        return 0
    widths = (12, max(len(r.label) for r in rows), 17, 12)
    head = ("chapter", "item", "status", "kind")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  what is checked")
    for r in rows:
        cells = (r.chapter, r.label, r.status, r.kind)
        print("  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)) + "  " + r.statement)
    print()
    table = ledger.counts(rows)
    print("chapter".ljust(12) + "".join(s.rjust(18) for s in ledger.STATUSES) + "rows".rjust(7))
    for c, n in table.items():
        print(c.ljust(12) + "".join(str(n[s]).rjust(18) for s in ledger.STATUSES)
              + str(sum(n.values())).rjust(7))
    total = {s: sum(n[s] for n in table.values()) for s in ledger.STATUSES}
    print("all".ljust(12) + "".join(str(total[s]).rjust(18) for s in ledger.STATUSES)
          + str(sum(total.values())).rjust(7))
    return 0


def _chosen_chapters(requested: list[str] | None, experiments: list[str] | None = None) -> list[str] | None:
    """The pages asked for (every chapter and experiment by default), or None after naming the
    unknown ones. An experiment is named by its file stem (``--experiment NAME``) or as
    ``experiments/NAME``."""
    from . import book

    names = book.page_names()
    asked = list(requested or []) + [e if e.startswith("experiments/") else f"experiments/{e}"
                                     for e in (experiments or [])]
    chosen = asked or names
    unknown = [c for c in chosen if c not in names]
    if unknown:
        print(f"unknown chapter {', '.join(unknown)}; the chapters and experiments are: "
              f"{', '.join(names)}", file=sys.stderr)
        return None
    return chosen


def _execute(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from . import book

    chosen = _chosen_chapters(args.chapter, args.experiment)
    if chosen is None:
        return 2
    failures = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(book.execute_chapter, c, store=args.store, force=args.force): c
                   for c in chosen}
        bar = tqdm(total=len(futures), desc="chapters", unit="chapter", disable=args.quiet)
        for future in as_completed(futures):
            chapter = futures[future]
            try:
                _, ran = future.result()
                bar.write(f"{chapter}: {'executed' if ran else 'unchanged, cached execution reused'}"
                          + (", stored" if args.store else ", outputs match the stored notebook"))
            except book.ChapterFailed as err:
                failures.append(str(err))
            bar.update()
        bar.close()
    for text in failures:
        print(text, file=sys.stderr)
    return 1 if failures else 0


def _figures(args: argparse.Namespace) -> int:
    import csv
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from . import book

    chosen = _chosen_chapters(args.chapter, args.experiment)
    if chosen is None:
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    expected = [dict(row, file=f"{row['figure']}.{args.format}") for c in chosen
                for row in book.figure_index(c)]
    for row in expected:  # a file left by an earlier run must not stand in for a missing figure
        (out / row["file"]).unlink(missing_ok=True)
    # each chapter runs in its own fresh process (matplotlib's state and the working folder are
    # per process); "spawn" because forking a process that has started threads is unsafe
    with ProcessPoolExecutor(max_workers=max(1, args.jobs),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(book.redraw_chapter_figures, c, str(out), args.format) for c in chosen]
        for future in tqdm(futures, desc="chapters", unit="chapter", disable=args.quiet):
            future.result()
    rows = expected
    missing = [r["file"] for r in rows if not (out / r["file"]).exists()]
    with open(out / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "chapter", "section", "label", "caption"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows) - len(missing)} figures and index.csv written to {out}")
    if missing:
        print("not drawn: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `python -m crowdlib ledger | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="python -m crowdlib",
                                     description="crowdlib's command-line entry")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ledger", help="print the reproduction ledger of the book")
    p.add_argument("--json", action="store_true",
                   help="a JSON list of rows with keys " + ", ".join(ledger.JSON_KEYS))
    p.add_argument("--chapter", help="only this chapter (its file stem, e.g. contests)")
    p.add_argument("--dir", default=None, help="the ledger folder (default: the book's ledger/)")
    p.set_defaults(run=_ledger)
    e = sub.add_parser("execute", help="execute the chapters whose sources or dependencies changed")
    e.add_argument("--chapter", action="append", help="only this chapter (repeatable)")
    e.add_argument("--experiment", action="append",
                   help="only this experiment, experiments/NAME.md (repeatable)")
    e.add_argument("--store", action="store_true",
                   help="write the executed notebook and the ledger as the stored ones")
    e.add_argument("--force", action="store_true", help="execute even if nothing changed")
    e.add_argument("--jobs", type=int, default=2, help="chapters executed at once (default 2)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(run=_execute)
    f = sub.add_parser("figures", help="redraw every figure of the book without Jupyter")
    f.add_argument("--chapter", action="append", help="only this chapter (repeatable)")
    f.add_argument("--experiment", action="append",
                   help="only this experiment, experiments/NAME.md (repeatable)")
    f.add_argument("--out", default="figures", help="the folder to write to (default: figures)")
    f.add_argument("--format", choices=("png", "svg"), default="png")
    f.add_argument("--jobs", type=int, default=2, help="chapters drawn at once (default 2)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(run=_figures)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
