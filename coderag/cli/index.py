"""``coderag index build`` (corpus -> embeddings -> FAISS index) and ``coderag retrieve`` (question -> schemas)."""

from __future__ import annotations

import argparse
import json
import time

from coderag.config import JobSettings, add_settings_flags
from coderag.errors import ConfigError


def _cmd_index_build(args: argparse.Namespace) -> int:
    from coderag.corpus import dedupe_schemas, load_corpus
    from coderag.retrieval.encoder import DEFAULT_ENCODER, load_encoder, resolve_encoder_path
    from coderag.retrieval.index import SchemaIndex

    s = JobSettings.from_args(args, "index-build")
    # A wrong encoder path should fail before the corpus is loaded, not after.
    encoder = s.encoder or DEFAULT_ENCODER
    resolve_encoder_path(encoder)
    if s.db is not None:
        if s.examples:
            raise ConfigError("--examples stores examples of a generated corpus's training split: it cannot be "
                              "combined with --db (a live database has no question -> SQL pairs)")
        return _index_database(s, encoder, args)
    records = load_corpus(s.corpus, split=s.split, limit=s.n_records, seed=s.seed)
    schema_corpus = dedupe_schemas(records)
    if not schema_corpus.snippets:
        raise ConfigError(f"corpus {s.corpus!r} yields no schema snippets: check its sql_context column")
    spec = s.index_spec()
    encoder_model = load_encoder(encoder)
    started = time.perf_counter()
    index = SchemaIndex.build(
        encoder_model,
        schema_corpus.snippets,
        domains=schema_corpus.snippet_domains,
        batch_size=s.batch_size,
        show_progress=args.progress,
        spec=spec,
        device=s.device,
        encode_workers=s.encode_workers,
        seed=s.seed,
        encoder_backend=s.encoder_backend or "torch",
        lexical_weight=s.lexical_weight,
    )
    if s.examples:
        from coderag.retrieval.examples import ExampleIndex, training_examples

        train, held_out = training_examples(records, s.eval_fraction, s.seed)
        index.examples = ExampleIndex.build(encoder_model, train, held_out_domains={str(r["domain"]) for r in held_out},
                                            batch_size=s.batch_size, show_progress=args.progress)
    seconds = time.perf_counter() - started
    out = index.save(args.out)
    if index.examples is not None:
        print(f"stored {index.examples.count} question -> SQL examples of {index.examples.manifest()['domains']} "
              f"training domains ({len(index.examples.held_out_domains)} held-out domains kept out)")
    print(
        f"indexed {index.count} schema snippets from {len(records)} records "
        f"({schema_corpus.duplicates_dropped} duplicates dropped), dim {index.dim}, "
        f"encoder {index.encoder_name} ({index.encoder_backend}), index {index.spec.index_type}"
        + "".join(f" {key}={value}" for key, value in index.spec.params().items())
    )
    print(f"built in {seconds:.1f}s ({index.count / max(seconds, 1e-9):.1f} snippets/s); wrote {out}")
    return 0


def _index_database(s: JobSettings, encoder: str, args: argparse.Namespace) -> int:
    """``index build --db``: one snippet per table of the live database; a no-op when its schema is unchanged."""
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.index import SchemaIndex, read_manifest
    from coderag.sql.databases import open_database

    database = open_database(s.db)
    try:
        schema = database.introspect(sample_values=s.sample_values)
    finally:
        database.close()
    source = {**schema.to_manifest(), "encoder_requested": encoder}
    manifest = read_manifest(args.out) or {}
    previous = manifest.get("source") or {}
    backend = s.encoder_backend or "torch"
    same_weight = manifest.get("lexical_weight", 0.0) == s.lexical_weight
    if not args.force and previous == source and manifest.get("encoder_backend", "torch") == backend and same_weight:
        print(f"schema of {schema.source} unchanged (fingerprint {source['schema_fingerprint'][:12]}, "
              f"{len(schema.tables)} tables): {args.out} left as it is")
        return 0
    encoder_model = load_encoder(encoder)
    started = time.perf_counter()
    index = SchemaIndex.build(encoder_model, schema.snippets(), domains=[t.name for t in schema.tables],
                              batch_size=s.batch_size, show_progress=args.progress, spec=s.index_spec(),
                              device=s.device, encode_workers=s.encode_workers, seed=s.seed,
                              encoder_backend=backend, lexical_weight=s.lexical_weight)
    index.source = source
    seconds = time.perf_counter() - started
    out = index.save(args.out)
    why = "first build" if not previous else ("rebuilt on request" if previous == source else "schema changed")
    print(f"indexed {index.count} tables of {schema.dialect} "
          f"database {schema.source} ({why}; fingerprint {source['schema_fingerprint'][:12]}), dim {index.dim}, "
          f"encoder {index.encoder_name}")
    print(f"built in {seconds:.1f}s; wrote {out}")
    return 0


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from coderag.retrieval.encoder import load_encoder
    from coderag.retrieval.index import SchemaIndex
    from coderag.retrieval.onnx_encoder import load_query_encoder
    from coderag.retrieval.search import retrieve_schemas, validate_question

    # Validate cheap inputs before loading the index and the encoder (seconds).
    s = JobSettings.from_args(args, "retrieve")
    questions = [validate_question(q) for q in args.questions]
    index = SchemaIndex.load(args.index)
    encoder_model = load_query_encoder(index, load_encoder(s.encoder or index.encoder_name), s.encoder_backend)
    results = retrieve_schemas(index, encoder_model, questions, k=s.k, min_score=s.min_score)
    if args.json:
        payload = [{"question": q, "schemas": [hit.to_dict() for hit in hits]} for q, hits in zip(questions, results)]
        print(json.dumps(payload if len(payload) > 1 else payload[0], indent=2, ensure_ascii=False))
        return 0
    for question, hits in zip(questions, results):
        print(f"Q: {question}")
        if not hits:
            print("  (no schema scored above the floor)")
        for hit in hits:
            print(f"  [{hit.rank}] score={hit.score:.3f} domain={hit.domain} id={hit.snippet_id}")
            print("      " + hit.text.replace("\n", "\n      "))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``index build`` and ``retrieve`` to the ``coderag`` parser."""
    index = sub.add_parser(
        "index",
        help="build a FAISS index of schema snippets",
        description="Manage schema indexes: a FAISS index (exact flat, or IVF / HNSW) over L2-normalized "
                    "embeddings plus a JSON corpus map and a manifest (encoder, dim, count, index type, checksums).",
    )
    index_sub = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = index_sub.add_parser(
        "build",
        help="embed a corpus's deduplicated schemas and save the index",
        description="Load a corpus, deduplicate its CREATE TABLE schema snippets, embed them with the "
                    "encoder and write sql_rag_faiss_index.bin, corpus_map.json and manifest.json to "
                    "--out atomically. With --db URL, index a live database instead: one CREATE TABLE "
                    "snippet per table (columns, types, keys, --sample-values), the manifest records the "
                    "source and a schema fingerprint, and an unchanged schema leaves the index as it is. "
                    "--examples K (K > 0) also stores the question -> SQL examples of the corpus's training "
                    "domains (split by domain, --eval-fraction held out) for `ask --examples`.",
    )
    build.add_argument("--out", required=True, metavar="DIR", help="index directory to write (replaced atomically)")
    build.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="show a progress bar (default: when stderr is a terminal)")
    build.add_argument("--force", action="store_true", help="with --db: rebuild even when the schema is unchanged")
    add_settings_flags(build, JobSettings, ("corpus", "split", "n_records", "seed", "encoder", "batch_size", "db",
                                            "examples", "eval_fraction", "encoder_backend",
                                            "sample_values", "device", "encode_workers", "index_type", "lexical_weight", "nlist",
                                            "nprobe", "hnsw_m", "ef_construction", "ef_search"))
    build.set_defaults(func=_cmd_index_build)

    retrieve = sub.add_parser(
        "retrieve",
        help="top-k schema snippets for a question",
        description="Embed the question with the index's encoder and print the k most similar schema "
                    "snippets with cosine scores.",
    )
    retrieve.add_argument("--index", required=True, metavar="DIR", help="index directory from `coderag index build`")
    retrieve.add_argument("--question", dest="questions", required=True, action="append",
                          help="question in natural language (repeat for several)")
    retrieve.add_argument("--json", action="store_true", help="print results as JSON")
    add_settings_flags(retrieve, JobSettings, ("k", "min_score", "encoder", "encoder_backend"))
    retrieve.set_defaults(func=_cmd_retrieve)
