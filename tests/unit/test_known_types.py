"""Stored payloads name classes; reading one back never imports the module it names.

Each process here is fresh (a subprocess), so what it knows is only what it imported itself.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import undying
from undying import InvalidArgument, known_types
from undying.codec import Codec

ZEN = "Beautiful is better than ugly"


def python(code: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def test_a_planted_class_reference_never_imports_its_module(tmp_path: Path) -> None:
    code = """
    import sys, msgpack, zlib
    from undying import codec_classes
    from undying.codec import Codec
    from undying.errors import SerializationError

    def frame(header, body):
        head = bytes((header,))
        return head + body + zlib.crc32(head + body).to_bytes(4, "little")

    planted = [
        frame(1, msgpack.packb(msgpack.ExtType(12, msgpack.packb(["this", "Zen", {}])))),
        frame(1, msgpack.packb(msgpack.ExtType(11, msgpack.packb(["venv.__main__", "E", 1])))),
        frame(3, msgpack.packb([codec_classes.tag(12, "venv.__main__:Main", []), ])),
        frame(3, msgpack.packb([codec_classes.tag(13, "this:Model", ["a"]), 0, None, None, 1])),
    ]
    for data in planted:
        try:
            Codec().decode(data)
            print("decoded")
        except SerializationError as exc:
            print("refused:", str(exc)[:120])
    print("imported:", [m for m in ("this", "venv", "venv.__main__") if m in sys.modules])
    """
    out = python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert ZEN not in out.stdout  # `import this` prints the Zen of Python
    lines = out.stdout.splitlines()
    assert len([line for line in lines if line.startswith("refused:")]) == 4, out.stdout
    assert "which this process does not know" in out.stdout
    assert "imported: []" in lines
    assert not list(tmp_path.iterdir())  # venv.__main__ would have created a virtualenv here


def test_encoding_does_not_import_either(tmp_path: Path) -> None:
    code = """
    import dataclasses, sys
    from undying.codec import Codec
    from undying.errors import SerializationError

    @dataclasses.dataclass
    class Fake:
        a: int

    Fake.__module__ = "this"  # claims to live in a module that is not imported
    try:
        Codec().encode(Fake(1))
    except SerializationError as exc:
        print("refused:", exc)
    print("imported:", "this" in sys.modules)
    """
    out = python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert ZEN not in out.stdout
    assert "refused: cannot serialize value: dataclass this.Fake cannot be found" in out.stdout
    assert "imported: False" in out.stdout


MODULES = {
    "points.py": """
        import pydantic

        class Point(pydantic.BaseModel):
            x: int
        """,
    "circles.py": """
        import pydantic
        from points import Point

        class Circle(pydantic.BaseModel):
            center: Point
        """,
    "shapes.py": """
        import dataclasses, enum

        @dataclasses.dataclass
        class Square:
            side: int

        class Color(enum.Enum):
            RED = "red"
        """,
    "agent_mod.py": """
        from __future__ import annotations
        import undying
        import circles
        from shapes import Square

        @undying.step
        async def draw() -> list[circles.Circle]:
            return []
        """,
}


def write_modules(root: Path) -> None:
    for name, source in MODULES.items():
        (root / name).write_text(textwrap.dedent(source))


def test_classes_known_through_workflow_modules_annotations_and_fields(tmp_path: Path) -> None:
    write_modules(tmp_path)
    encode = """
    import sys, shapes, circles, points
    from undying.codec import Codec
    value = [shapes.Square(2), circles.Circle(center=points.Point(x=1)), shapes.Color.RED]
    print(Codec().encode(value).hex())
    """
    written = python(encode, tmp_path)
    assert written.returncode == 0, written.stderr
    decode = """
    import sys
    {imports}
    from undying.codec import Codec
    from undying.errors import SerializationError
    try:
        print("decoded:", Codec().decode(bytes.fromhex(sys.stdin.read())))
    except SerializationError as exc:
        print("refused:", exc)
    """
    # agent_mod defines a step: Square is in its namespace, Circle in the step's annotation,
    # Point in Circle's fields. Color is in shapes, which defines no workflow: not known.
    out = python(decode.format(imports="import agent_mod"), tmp_path, written.stdout)
    assert "refused: stored payload holds a enum of class shapes.Color" in out.stdout, out
    assert "undying.register_type(shapes.Color)" in out.stdout
    registered = "import agent_mod, shapes, undying; undying.register_type(shapes.Color)"
    out = python(decode.format(imports=registered), tmp_path, written.stdout)
    assert out.stdout.startswith("decoded: [Square(side=2), Circle(center=Point(x=1))"), out
    # Without the workflow module, importing the classes' modules is not enough.
    out = python(decode.format(imports="import shapes, circles, points"), tmp_path, written.stdout)
    assert "refused: stored payload holds a dataclass of class shapes.Square" in out.stdout, out


@dataclasses.dataclass
class Registered:
    a: int


class Mode(enum.Enum):
    ON = 1


def test_register_type_checks_its_argument() -> None:
    assert undying.register_type(Registered) is Registered
    assert "register_type" in undying.__all__
    with pytest.raises(InvalidArgument, match="needs a class"):
        undying.register_type(Registered(1))  # type: ignore[type-var]
    with pytest.raises(InvalidArgument, match="SystemExit"):
        undying.register_type(SystemExit)
    with pytest.raises(InvalidArgument, match="none of these"):
        undying.register_type(Path)

    @dataclasses.dataclass
    class Local:
        a: int

    with pytest.raises(InvalidArgument, match="inside a function"):
        undying.register_type(Local)


def test_register_type_registers_classes_reachable_from_fields() -> None:
    class_source = """
    import dataclasses, enum, pydantic

    class Inner(enum.Enum):
        A = "a"

    @dataclasses.dataclass
    class Middle:
        inner: dict[str, list[Inner]]

    class Outer(pydantic.BaseModel):
        middle: Middle | None = None
    """
    module = type(sys)("reachable_mod")
    sys.modules["reachable_mod"] = module
    try:
        exec(textwrap.dedent(class_source), module.__dict__)
        undying.register_type(module.Outer)
        for name in ("Outer", "Middle", "Inner"):
            assert known_types.lookup(f"reachable_mod:{name}") is getattr(module, name)
    finally:
        del sys.modules["reachable_mod"]


def test_a_registered_class_decodes_without_being_encoded_first(tmp_path: Path) -> None:
    data = Codec().encode([Registered(1), Mode.ON]).hex()
    code = f"""
    import sys, undying
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    import test_known_types as t
    from undying.codec import Codec
    undying.register_type(t.Registered)
    undying.register_type(t.Mode)
    print(Codec().decode(bytes.fromhex({data!r})))
    """
    out = python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[Registered(a=1), <Mode.ON: 1>]"
