"""Serve deployed IRs over the Open Inference Protocol (v2) with KServe's ModelServer.

    python -m scripts.serve --repository results/serving/models
    python -m scripts.serve --model default=results/default/ir/INT8/model.xml --port 8080

--repository serves every model of an OVMS-layout model repository (the `serving` target:
<name>/<version>/model.xml, the highest version); --model NAME=XML serves one IR (ir.json
beside it). Listens on 127.0.0.1 unless told otherwise; logs one line per request; stops
on SIGTERM or Ctrl-C after the requests in flight. Needs the serving environment
(requirements-serve.txt). Endpoints: see scripts/serve/server.py and docs/serving.md.
"""
import argparse
import os
import re

from scripts.core.errors import PipelineError, run_cli


def repository_models(folder):
    """{name: model.xml of its highest numbered version} of an OVMS-layout model repository."""
    if not os.path.isdir(folder):
        raise PipelineError(f"--repository {folder}: no such folder")
    found = {}
    for name in sorted(os.listdir(folder)):
        versions = [entry for entry in os.listdir(os.path.join(folder, name)) if entry.isdigit()] \
            if os.path.isdir(os.path.join(folder, name)) else []
        if versions:
            xml = os.path.join(folder, name, max(versions, key=int), "model.xml")
            if os.path.isfile(xml):
                found[name] = xml
    if not found:
        raise PipelineError(f"--repository {folder}: no <name>/<version>/model.xml in it")
    return found


def named_model(text):
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]*)=(.+\.xml)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=path/to/model.xml")
    return match.group(1), match.group(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--repository", help="a model repository (results/serving/models)")
    source.add_argument("--model", type=named_model, action="append", help="NAME=model.xml (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    parser.add_argument("--threads", type=int, default=0, help="CPU inference threads (0: the plugin's choice)")
    parser.add_argument("--max-body-bytes", type=int, default=20_000_000,
                        help="larger request bodies get 413 (default 20000000)")
    args = parser.parse_args(argv)
    from scripts.serve import server
    chosen = repository_models(args.repository) if args.repository else dict(args.model)
    for name, xml in chosen.items():
        if not os.path.isfile(xml):
            raise PipelineError(f"--model {name}={xml}: no such file")
    model_class = server.served_model_class()
    server.quiet_kserve_logs()
    models = []
    for name, xml in chosen.items():
        model = model_class(name, xml, args.device, args.threads or None)
        model.load()
        models.append(model)
    server.serve(models, args.host, args.port, args.max_body_bytes)


if __name__ == "__main__":
    run_cli(main)
