"""Invokes every function of a running local stack through its Lambda Invoke API with
boto3, as a test written against `sam local start-lambda` would, using the events in
events/. Run by tests/invoke.rs (`make test`) against a stack of its own:

    python tests/invoke_boto3.py http://127.0.0.1:3001 events

Exits 1 naming every check that failed."""

import base64
import json
import pathlib
import sys

import boto3
from botocore.config import Config

# events/<prefix>-... belongs to this function (events/README.md).
FUNCTIONS = {
    "authorizer": "AuthorizerFunction",
    "connect": "ConnectFunction",
    "disconnect": "DisconnectFunction",
    "message": "MessageFunction",
    "fanout": "FanoutFunction",
    "sequencer": "SequencerFunction",
    "http": "HttpFunction",
}


def order(path):
    """Where an event comes in a connection's life: the message events act as the
    connection connect.json stores and disconnect.json removes."""
    prefix = path.stem.split("-")[0]
    if path.name == "message-subscribe.json":
        return 3  # subscribed, the connection is pruned by the next publish's fan-out
    return {"authorizer": 0, "connect": 1, "message": 2, "sequencer": 4, "fanout": 5, "http": 6}.get(prefix, 7)


def function_of(path):
    prefix = path.stem.split("-")[0]
    return FUNCTIONS[prefix]


def answered_as_its_function_answers(function, payload):
    """Whether `payload` is what `function` answers when all went well."""
    if function == "AuthorizerFunction":
        return payload["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    if function in ("ConnectFunction", "DisconnectFunction", "MessageFunction"):
        return payload["statusCode"] == 200
    if function in ("FanoutFunction", "SequencerFunction"):
        return payload.get("batchItemFailures") == []
    if function == "HttpFunction":
        # A streamed response gathered whole: the prelude, eight NUL bytes, the body.
        prelude, _, _ = payload.partition(b"\0" * 8)
        return json.loads(prelude)["statusCode"] == 200
    return False


def main():
    endpoint, events = sys.argv[1], pathlib.Path(sys.argv[2])
    client = boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}, read_timeout=60),
    )
    failures = []
    files = sorted(events.glob("*.json"), key=lambda path: (order(path), path.name))
    if not files:
        failures.append(f"no events in {events}")

    for path in files:
        function = function_of(path)
        answer = client.invoke(FunctionName=function, Payload=path.read_bytes())
        raw = answer["Payload"].read()
        if answer["StatusCode"] != 200 or "FunctionError" in answer:
            failures.append(f"{path.name}: {answer['StatusCode']} {answer.get('FunctionError')} {raw[:300]!r}")
            continue
        payload = raw if function == "HttpFunction" else json.loads(raw)
        if not answered_as_its_function_answers(function, payload):
            failures.append(f"{path.name}: {function} answered {raw[:300]!r}")
        else:
            print(f"ok   {path.name} -> {function}")

    # A function error: the message function cannot read a number as a WebSocket event.
    answer = client.invoke(FunctionName="MessageFunction", Payload=b"42")
    error = json.loads(answer["Payload"].read())
    if answer.get("FunctionError") != "Unhandled" or "errorMessage" not in error:
        failures.append(f"a bad event: {answer.get('FunctionError')} {error}")
    else:
        print(f"ok   a bad event -> Unhandled: {error['errorType']}")

    # An Event invocation is accepted at once; a tail carries the invocation's log.
    ping = (events / "message-ping.json").read_bytes()
    answer = client.invoke(FunctionName="MessageFunction", InvocationType="Event", Payload=ping)
    if answer["StatusCode"] != 202:
        failures.append(f"Event: {answer['StatusCode']}")
    else:
        print("ok   Event -> 202")
    answer = client.invoke(FunctionName="MessageFunction", LogType="Tail", Payload=ping)
    tail = base64.b64decode(answer.get("LogResult", "")).decode("utf-8", "replace")
    if "START RequestId:" not in tail or "REPORT RequestId:" not in tail:
        failures.append(f"Tail: {tail!r}")
    else:
        print("ok   Tail -> START ... REPORT")

    # An unknown function is ResourceNotFoundException, as Lambda says it.
    try:
        client.invoke(FunctionName="NoSuchFunction", Payload=b"{}")
        failures.append("an unknown function was invoked")
    except client.exceptions.ResourceNotFoundException:
        print("ok   NoSuchFunction -> ResourceNotFoundException")

    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
