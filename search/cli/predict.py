"""`resnet-search predict`: the top classes of image files, by a study's champion, a model
URI or a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_predict(args: argparse.Namespace) -> int:
    """Each file's top classes; a file that cannot be read is said and the rest go on
    (exit 1 when any could not be classified)."""
    from search.results.predict import predict_files  # imports torch: not at the CLI's start

    predictions = predict_files(args.source, args.files, top_k=args.top_k, device=args.device,
                                batch_size=args.batch_size, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    for p in predictions:
        if p.error is not None:
            print(f"resnet-search: {p.file}: {p.error}", file=sys.stderr)
        elif not args.json:
            print(f"{p.file}: " + ", ".join(f"{name} {probability:.3f}"
                                            for name, probability in p.top))
    return 1 if any(p.error for p in predictions) else 0
