#!/usr/bin/env python3
"""Load Spider's databases into PostgreSQL and/or MariaDB, for ``coderag evaluate --db`` on a real server.

Layout (re-running replaces what an earlier run loaded):
  PostgreSQL: database ``spider``, one schema per db_id (lower-cased)
              -> coderag evaluate --db 'postgresql:///spider?options=-csearch_path%3D{db_id}'
  MariaDB:    one database ``spider_<db_id>`` (lower-cased) per db_id
              -> coderag evaluate --db 'mysql+pymysql://root@127.0.0.1/spider_{db_id}'

Usage:
  python3 scripts/load_spider.py --spider-dir ../shared/datasets/spider \
      [--postgres postgresql:///postgres] [--mariadb mysql+pymysql://root@127.0.0.1/] [--all-databases]

By default only the databases the questions file (dev.json) asks about are loaded. Types are mapped as
coderag/sql/loading.py describes; every fallback and dropped key is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderag.errors import CodeRAGError  # noqa: E402
from coderag.sql.loading import copy_sqlite_database, ensure_database  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider-dir", type=Path, required=True, help="folder with tables.json and database/")
    parser.add_argument("--questions-file", type=Path, help="which databases to load (default dev.json)")
    parser.add_argument("--all-databases", action="store_true", help="load every database under database/")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL URL on the target server "
                                                         "(e.g. postgresql:///postgres)")
    parser.add_argument("--mariadb", metavar="URL", help="a MariaDB/MySQL URL on the target server "
                                                        "(e.g. mysql+pymysql://root@127.0.0.1/)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the per-database reports here")
    args = parser.parse_args(argv)
    if not args.postgres and not args.mariadb:
        parser.error("name a target: --postgres URL and/or --mariadb URL")
    try:
        if args.all_databases:
            db_ids = sorted(p.name for p in (args.spider_dir / "database").iterdir() if p.is_dir())
        else:
            questions = args.questions_file or args.spider_dir / "dev.json"
            db_ids = sorted({q["db_id"] for q in json.loads(questions.read_text(encoding="utf-8"))})
    except (OSError, ValueError, KeyError) as exc:
        print(f"load_spider: error: cannot read the Spider folder ({exc})", file=sys.stderr)
        return 2
    reports = []
    try:
        targets = []
        if args.postgres:
            spider_url = ensure_database(args.postgres, "spider")
            targets.append(("postgresql", lambda db_id: (spider_url, db_id.lower())))
        if args.mariadb:
            targets.append(("mariadb", lambda db_id: (ensure_database(args.mariadb, f"spider_{db_id.lower()}"),
                                                       None)))
        for label, where in targets:
            started = time.perf_counter()
            for db_id in db_ids:
                url, schema = where(db_id)
                report = copy_sqlite_database(args.spider_dir / "database" / db_id / f"{db_id}.sqlite", url,
                                              schema=schema)
                reports.append({"server": label, "db_id": db_id, **report.to_dict()})
                extra = []
                if report.fallbacks:
                    extra.append(f"type fallbacks: {'; '.join(report.fallbacks)}")
                if report.primary_keys_dropped:
                    extra.append(f"primary keys dropped: {', '.join(report.primary_keys_dropped)}")
                print(f"{label} {db_id}: {report.tables} tables, {report.rows} rows"
                      + (f" ({' | '.join(extra)})" if extra else ""))
            print(f"{label}: {len(db_ids)} databases in {time.perf_counter() - started:.1f}s")
    except CodeRAGError as exc:
        print(f"load_spider: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
