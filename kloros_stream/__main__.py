from .cli import main

if __name__ == "__main__":  # not when a parse process (spawn) imports it as __mp_main__
    raise SystemExit(main())
