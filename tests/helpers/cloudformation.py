"""A small evaluator for the packaged CloudFormation template (no AWS involved).

It resolves the intrinsic functions this stack uses (Ref, Fn::Sub, Fn::If, Fn::Join,
Fn::GetAtt, Fn::Equals/Not/And/Or in Conditions) for a given set of parameter values and
fixed pseudo parameters, so that tests can compare real ARNs and names instead of
pattern-matching JSON. Attributes of resources (GetAtt) and Refs to resources, which only
exist at deploy time, become readable tokens: ``{StudyQueue.Arn}``, ``{StudyQueue}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STAGE = "dev"
SERVICE = "dicom-compression"
STACK = f"{SERVICE}-{STAGE}"

NO_VALUE = object()
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class Stack:
    def __init__(self, template: dict, **parameters: str) -> None:
        self.template = template
        self.resources_all: dict[str, dict] = template["Resources"]
        self.params: dict[str, Any] = {}
        for name, spec in template.get("Parameters", {}).items():
            self.params[name] = spec.get("Default")
        unknown = set(parameters) - set(self.params)
        if unknown:
            raise KeyError(f"unknown template parameters {sorted(unknown)}")
        self.params.update(parameters)
        self.pseudo = {
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        self._condition_exprs: dict[str, Any] = template.get("Conditions", {})
        self.conditions: dict[str, bool] = {}
        for name in self._condition_exprs:
            self.condition(name)

    def condition(self, name: str) -> bool:
        """A Condition's value; one may refer to another (``{"Condition": name}``)."""
        if name not in self.conditions:
            self.conditions[name] = bool(self.eval(self._condition_exprs[name]))
        return self.conditions[name]

    # ------------------------------------------------------------------ resources
    def exists(self, logical_id: str) -> bool:
        res = self.resources_all.get(logical_id)
        if res is None:
            return False
        cond = res.get("Condition")
        return cond is None or self.conditions[cond]

    @property
    def resources(self) -> dict[str, dict]:
        return {k: v for k, v in self.resources_all.items() if self.exists(k)}

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == rtype}

    def props(self, logical_id: str) -> Any:
        """The resource's Properties, fully evaluated."""
        assert self.exists(logical_id), f"{logical_id} is not in the stack"
        return self.eval(self.resources_all[logical_id].get("Properties", {}))

    # ------------------------------------------------------------------ intrinsics
    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.resources_all:
            return "{" + name + "}"
        raise KeyError(f"Ref to unknown {name}")

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def repl(m: re.Match) -> str:
            key = m.group(1)
            if key in variables:
                value = variables[key]
            elif "." in key and key.split(".", 1)[0] in self.resources_all:
                value = "{" + key + "}"
            else:
                value = self.ref(key)
            assert isinstance(value, str), f"Fn::Sub ${{{key}}} is not a string: {value!r}"
            return value

        return _SUB_VAR.sub(repl, text)

    def eval(self, node: Any) -> Any:  # noqa: C901 - a plain dispatcher
        if isinstance(node, list):
            out = [self.eval(x) for x in node]
            return [x for x in out if x is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                target = arg if isinstance(arg, list) else arg.split(".", 1)
                return "{" + ".".join(target) + "}"
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                text, variables = arg
                return self.sub(text, {k: self.eval(v) for k, v in variables.items()})
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(self.eval(items))
            if key == "Fn::If":
                cond, yes, no = arg
                return self.eval(yes if self.condition(cond) else no)
            if key == "Fn::Equals":
                a, b = self.eval(arg)
                return a == b
            if key == "Fn::Not":
                return not self.eval(arg[0])
            if key == "Fn::And":
                return all(self.eval(arg))
            if key == "Fn::Or":
                return any(self.eval(arg))
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                raise NotImplementedError(key)
        out = {}
        for k, v in node.items():
            value = self.eval(v)
            if value is not NO_VALUE:
                out[k] = value
        return out

    # ------------------------------------------------------------------ IAM
    def role_statements(self, role_id: str) -> Iterator[dict]:
        """Every statement granted to the role: inline Policies + attached AWS::IAM::Policy."""
        role = self.props(role_id)
        for policy in role.get("Policies", []):
            yield from _as_list(policy["PolicyDocument"]["Statement"])
        for pid in self.of_type("AWS::IAM::Policy"):
            props = self.props(pid)
            if "{" + role_id + "}" in props.get("Roles", []):
                yield from _as_list(props["PolicyDocument"]["Statement"])


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def allowed_pairs(statements: list[dict]) -> set[tuple[str, str]]:
    """(action, resource) pairs of all Allow statements; NotAction/NotResource refused."""
    pairs: set[tuple[str, str]] = set()
    for st in statements:
        assert st["Effect"] in ("Allow", "Deny"), st
        if st["Effect"] != "Allow":
            continue
        assert "NotAction" not in st and "NotResource" not in st, st
        for action in _as_list(st["Action"]):
            for resource in _as_list(st["Resource"]):
                pairs.add((action, resource))
    return pairs
