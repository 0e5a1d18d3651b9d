"""Reading a results.json back (merge, report, fuzz, shrink): checked whole, every problem an error that
names the file and the place, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conformance.exitcodes import EXIT_INTERNAL
from conformance.judging.verdict import Verdict, judge
from conformance.result import RecordError, Result


class ResultsFileError(ValueError):
    """A results file that cannot be read or is not a results file; the message names it."""


def load_results(path: Path) -> dict[str, Any]:
    """Read and check a results.json: an object with a `run` object and a `results` list of records (each
    a valid Result record). Returns the parsed document."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsFileError(f"{path}: no such file (is this a results folder of `sepconv-conformance run`?)") \
            from None
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsFileError(f"{path}: cannot read: {error}") from None
    except (ValueError, RecursionError) as error:
        raise ResultsFileError(f"{path}: not valid JSON: {str(error)[:200]}") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise ResultsFileError(f"{path}: not a results file: expected an object with a 'results' list")
    for section in ("run", "environment", "summary"):
        if not isinstance(document.get(section, {}), dict):
            raise ResultsFileError(f"{path}: {section!r} must be an object")
    run = document.get("run", {})
    for key, types, what in (("backends", list, "a list"), ("backend_versions", dict, "an object"),
                             ("expectations", dict, "an object"), ("cases", list, "a list")):
        if key in run and not isinstance(run[key], types):
            raise ResultsFileError(f"{path}: run.{key} must be {what}")
    for number, record in enumerate(document["results"]):
        try:
            Result.from_dict(record)
        except (RecordError, TypeError) as error:
            raise ResultsFileError(f"{path}: results[{number}]: {error}") from None
    return document


def results_of(document: dict[str, Any]) -> list[Result]:
    """The records of a document that load_results checked, as Results."""
    return [Result.from_dict(record) for record in document["results"]]


def run_verdict(document: dict[str, Any]) -> Verdict:
    """The verdict on a results.json document (checked by results_file.load_results): its results judged
    with the completion and expected count its run recorded. A file that records neither is unproven."""
    run = document.get("run") or {}
    completion, expected = run.get("completion"), run.get("expected_results")
    if not isinstance(completion, str) or not (expected is None or (isinstance(expected, int)
                                                                    and not isinstance(expected, bool))):
        return Verdict(EXIT_INTERNAL, "UNPROVEN: the results file does not record a completed run")
    return judge(results_of(document), expected, completion)
