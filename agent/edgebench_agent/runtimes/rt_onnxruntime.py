"""onnxruntime: the default runtime. The session is onnxruntime's own InferenceSession (no wrapper in the loop)."""

from __future__ import annotations

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def version():
    import onnxruntime

    return onnxruntime.__version__


def session_options(ort, request):
    options = ort.SessionOptions()
    options.intra_op_num_threads = request["intra_op_threads"]
    options.inter_op_num_threads = request["inter_op_threads"]
    if request["spin_wait"] is not None:
        flag = "1" if request["spin_wait"] else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", flag)
        options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[request["graph_optimization_level"]])
    # onnxruntime's own log lines (coloured "[E:onnxruntime:...]") only with verbose: their text is in the error
    options.log_severity_level = 2 if request["verbose"] else 4
    return options


def providers_of(request):
    providers = [(request["provider"], {str(k): str(v) for k, v in request["provider_options"].items()})]
    if request["provider"] != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")  # for the nodes the accelerator does not take
    return providers


def create_session(request, path=None):
    """An InferenceSession with the request's settings. Raises SessionError (kind, message) when it cannot be."""
    import onnxruntime as ort

    from . import SessionError, _one_line

    path = path or request["model"]
    provider = request["provider"]
    available = ort.get_available_providers()
    if provider not in available:
        # Never fall back to the CPU silently: the numbers would describe another configuration.
        raise SessionError("provider", "execution provider %s is not available in this onnxruntime; available: %s"
                           % (provider, ", ".join(available)))
    ort.set_default_logger_severity(2 if request["verbose"] else 4)  # a failed load logs before the options apply
    try:
        session = ort.InferenceSession(path, sess_options=session_options(ort, request), providers=providers_of(request))
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        # Only this board could tell (the host checks first when it runs the same onnxruntime): a failed result.
        raise SessionError("onnxruntime", "onnxruntime cannot load %s (onnxruntime %s on this board): %s; `bench "
                           "convert --to opset:N` or another onnxruntime version may help" % (path, ort.__version__,
                                                                                            _one_line(exc)))
    if session.get_providers()[0] != provider:
        raise SessionError("provider", "onnxruntime did not enable %s (it used %s)"
                           % (provider, ", ".join(session.get_providers())))
    return session


def settings_of(session, request):
    return {"intra_op_threads": request["intra_op_threads"], "inter_op_threads": request["inter_op_threads"]}
