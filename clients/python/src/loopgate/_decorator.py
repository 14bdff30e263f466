"""``@require_approval(...)``: turn a function into a gated action, and ``ask_human``."""

from __future__ import annotations

import functools
import inspect
import json
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar, Union

from ._async import AsyncClient
from ._client import Client

F = TypeVar("F", bound=Callable[..., Any])

#: A fixed value, or a function of the call's arguments that computes it.
Computed = Union[Any, Callable[[Dict[str, Any]], Any]]

_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The client used when none is given: one per process, from ``LOOPGATE_URL`` and
    ``LOOPGATE_TOKEN``, made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def require_approval(
    name: Optional[str] = None,
    *,
    context: Computed = None,
    confidence: Computed = None,
    timeout: Optional[float] = None,
    client: Optional[Union[Client, AsyncClient]] = None,
    conversation_id: Computed = None,
) -> Callable[[F], F]:
    """Gate a function behind Loopgate: each call submits an action and runs the function only
    once it is approved, with the final arguments (a reviewer may have edited them).

    The action's ``name`` defaults to the function's name; its ``arguments`` are the call's
    arguments by parameter name (defaults filled in; they must be JSON). ``context``,
    ``confidence`` and ``conversation_id`` are values, or functions of the arguments dict.
    ``timeout`` (seconds; default: wait as long as it takes) bounds the wait, after which the
    action is withdrawn. A decision other than approval raises ``Rejected``, ``Blocked``,
    ``ApprovalTimeout`` or ``Cancelled`` (all ``NotApproved``), and the function does not run.

    Works on plain and ``async`` functions, and on methods (``self`` is not an argument).
    ``client`` defaults to one built from the environment::

        @require_approval(context={"channel": "chat"}, confidence=0.9)
        def issue_refund(order_id: str, amount: float) -> str:
            ...
    """

    def decorate(fn: F) -> F:
        action_name = name or fn.__name__
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        is_method = bool(params) and params[0].name in ("self", "cls")

        def prepare(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[List[Any], Dict[str, Any], Dict[str, Any]]:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            leading = [args[0]] if is_method and args else []
            arguments = _arguments_of(sig, bound.arguments, skip_first=is_method)
            try:
                json.dumps(arguments)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"the arguments of {action_name} must be JSON to be reviewed: {e}"
                ) from e
            extra = {
                "context": _compute(context, arguments),
                "confidence": _compute(confidence, arguments),
                "conversation_id": _compute(conversation_id, arguments),
            }
            return leading, arguments, extra

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_gated(*args: Any, **kwargs: Any) -> Any:
                leading, arguments, extra = prepare(args, kwargs)
                if isinstance(client, AsyncClient):
                    action = await client.request_approval(
                        action_name, arguments, timeout=timeout, **extra
                    )
                else:
                    own = client or default_client()
                    async with AsyncClient(own.url, own._token) as ac:
                        action = await ac.request_approval(
                            action_name, arguments, timeout=timeout, **extra
                        )
                call_args, call_kwargs = _call_of(sig, action.arguments, leading, is_method)
                return await fn(*call_args, **call_kwargs)

            return async_gated  # type: ignore[return-value]

        @functools.wraps(fn)
        def gated(*args: Any, **kwargs: Any) -> Any:
            if isinstance(client, AsyncClient):
                raise TypeError(
                    f"{action_name} is not async: give require_approval a Client, not an AsyncClient"
                )
            leading, arguments, extra = prepare(args, kwargs)
            action = (client or default_client()).request_approval(
                action_name, arguments, timeout=timeout, **extra
            )
            call_args, call_kwargs = _call_of(sig, action.arguments, leading, is_method)
            return fn(*call_args, **call_kwargs)

        return gated  # type: ignore[return-value]

    return decorate


def ask_human(
    question: str,
    *,
    context: Optional[Mapping[str, Any]] = None,
    conversation_id: Optional[str] = None,
    timeout: Optional[float] = None,
    client: Optional[Client] = None,
) -> str:
    """Ask a human a question and wait for the answer (see ``Client.ask_human``)."""
    return (client or default_client()).ask_human(
        question, context=context, conversation_id=conversation_id, timeout=timeout
    )


def _compute(value: Computed, arguments: Dict[str, Any]) -> Any:
    return value(dict(arguments)) if callable(value) else value


def _arguments_of(
    sig: inspect.Signature, bound: Mapping[str, Any], skip_first: bool
) -> Dict[str, Any]:
    """The action's arguments: the call's, by parameter name (``**kwargs`` flattened in)."""
    out: Dict[str, Any] = {}
    for i, (pname, value) in enumerate(bound.items()):
        if skip_first and i == 0:
            continue
        kind = sig.parameters[pname].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out[pname] = list(value)
        else:
            out[pname] = value
    return out


def _call_of(
    sig: inspect.Signature, final: Mapping[str, Any], leading: List[Any], is_method: bool
) -> Tuple[List[Any], Dict[str, Any]]:
    """How to call the function with the final (possibly edited) arguments."""
    rest = dict(final)
    args: List[Any] = list(leading)
    kwargs: Dict[str, Any] = {}
    for i, p in enumerate(sig.parameters.values()):
        if is_method and i == 0:
            continue
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            if p.name in rest:
                args.append(rest.pop(p.name))
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(rest.pop(p.name, []))
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        elif p.name in rest:
            kwargs[p.name] = rest.pop(p.name)
    # Whatever is left (an argument a reviewer added) goes in by name: into **kwargs if the
    # function has it, else Python's own TypeError names it.
    kwargs.update(rest)
    return args, kwargs
