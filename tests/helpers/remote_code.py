"""Python source to put in front of a subprocess script: `import dia_llama` then fails in that interpreter (and the
script checks it does), so whatever loads there comes from Hub remote code, not the installed package."""

import textwrap

BLOCK_DIA_LLAMA = textwrap.dedent("""
    import builtins
    _real_import = builtins.__import__
    def _guarded(name, *args, **kwargs):
        if name == "dia_llama" or name.startswith("dia_llama."):
            raise ImportError("dia_llama is blocked in this process")
        return _real_import(name, *args, **kwargs)
    builtins.__import__ = _guarded
    try:
        import dia_llama
        raise SystemExit("dia_llama should not import")
    except ImportError:
        pass
    """)
