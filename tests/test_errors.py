"""One test per error a user can make in a ``.model`` file (docs/language.md, "Errors").

Each test states the line, the column and the message (exactly, or a stable
prefix ending in "..."), and :func:`expect_error` checks that ``render()`` shows
``file:line:col: error: message``, the offending source line, and a caret under
the column.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import shardc
from shardc import Mesh, ShardcError

FILE = "test.model"

# Most programs below are this header plus one or two lines (line 5 onwards).
HEADER = """\
model m
mesh x=2, y=2
dims B=4, L=4, S=4, E=8, F=6
input a : f32[B, L, E]
"""


def expect_error(text: str, line: int, col: int, message: str, **kwargs: object) -> ShardcError:
    """Parse ``text``; it must fail at ``line``:``col`` with ``message`` ("..." ends a prefix)."""
    with pytest.raises(ShardcError) as info:
        shardc.parse(text, FILE, **kwargs)  # type: ignore[arg-type]
    err = info.value
    if message.endswith("..."):
        assert err.message.startswith(message[:-3]), err.message
    else:
        assert err.message == message
    assert (err.line, err.col) == (line, col), err.render()
    rendered = err.render().split("\n")
    assert rendered[0] == f"{FILE}:{line}:{col}: error: {err.message}"
    source_line = text.split("\n")[line - 1]
    assert rendered[1] == source_line
    assert rendered[2] == " " * (col - 1) + "^"
    return err


def at_line_5(stmt: str, col: int, message: str, **kwargs: object) -> ShardcError:
    """The header, then ``stmt`` on line 5."""
    return expect_error(HEADER + stmt + "\n", 5, col, message, **kwargs)


# --- the example of docs/language.md, "Errors" -------------------------------------------------
PALM = """\
model palm
dims B=2, L=1, E=8, F=32

input x : bf16[B, L, E]

repeat 2 {
  param g    : bf16[E]
  param win  : int8[E, F]
  param wout : int8[F, E]

  h  = layernorm(x, g, over=E)
  u  = gelu(einsum("BLE,EF->BLF", h, win))
  o  = h * 2
  f  = einsum("BLF,FE->BLE", u, win)
  x  = x + o + f
}
"""


def test_einsum_operand_dims_differ_from_the_spec_as_in_language_md() -> None:
    """docs/language.md's example: palm.model:14:33, and the message word for word.

    The rendering is docs/language.md's, byte for byte: the line as written (its
    two-space indentation included) and the caret under column 33.
    """
    with pytest.raises(ShardcError) as info:
        shardc.parse(PALM, "palm.model")
    assert info.value.render() == (
        'palm.model:14:33: error: einsum operand 2 has dims [E, F] but the spec says "FE"\n'
        '  f  = einsum("BLF,FE->BLE", u, win)\n'
        + " " * 32 + "^"
    )


def test_the_palm_program_is_fine_with_the_right_weight() -> None:
    shardc.parse(PALM.replace("u, win)", "u, wout)"))


# --- dims ---------------------------------------------------------------------------------
def test_undeclared_dim_in_a_type() -> None:
    err = at_line_5("param w : f32[E, Q]", 18, "undeclared dim Q")
    assert err.hint == "declare its size with 'dims Q=N'"
    assert err.render().split("\n")[3] == "  hint: declare its size with 'dims Q=N'"


def test_undeclared_dim_in_an_einsum_spec() -> None:
    at_line_5('y = einsum("BLE,EQ->BLQ", a, a)', 18, "undeclared dim Q in einsum spec")


def test_undeclared_dim_in_over() -> None:
    at_line_5("y = softmax(a, over=Q)", 21, "undeclared dim Q")


def test_over_a_dim_the_operand_lacks() -> None:
    at_line_5("y = softmax(a, over=F)", 21, "over=F, but the operand has dims [B, L, E]")


def test_dim_size_declared_twice() -> None:
    expect_error("model m\ndims B=4, L=4\ndims E=8, B=2\n", 3, 11, "dim B is already declared on line 2")


def test_dim_names_are_one_letter() -> None:
    at_line_5("param w : f32[E, FF]", 18, "dim names are one upper-case letter, got 'FF'")


def test_dims_repeated_in_a_type() -> None:
    at_line_5("param w : f32[E, E]", 18, "dim E appears twice in w's type; a tensor's dims are distinct")


def test_unknown_dtype() -> None:
    at_line_5("param w : f64[E]", 11, "unknown dtype 'f64'; expected f32, bf16, f16 or int8")


# --- ops and their arguments --------------------------------------------------------------
def test_broadcast_needs_a_subset_of_the_larger_operands_dims() -> None:
    expect_error(HEADER + "param w : f32[E, F]\ny = a + w\n", 6, 9,
                 "cannot broadcast [E, F] against [B, L, E]: dim F is not in the larger operand")


def test_unknown_op() -> None:
    at_line_5("y = swish(a)", 5, "unknown op 'swish'; the ops are causal, einsum, exp, gelu, last, layernorm, "
                                  "relabel, relu, rmsnorm, silu, softmax, sum, tanh")


def test_unknown_keyword_argument() -> None:
    at_line_5("y = softmax(a, dim=E)", 16, "unknown keyword argument 'dim' for softmax; expected over=")


def test_missing_keyword_argument() -> None:
    at_line_5("y = softmax(a)", 14, "softmax needs over=; usage: softmax(a, over=DIM)")


def test_missing_keyword_argument_of_a_norm_with_a_gain() -> None:
    expect_error(HEADER + "param g : f32[E]\ny = layernorm(a, g)\n", 6, 19,
                 "layernorm needs over=; usage: layernorm(a, [g], over=DIM)")


def test_keyword_argument_given_twice() -> None:
    at_line_5("y = softmax(a, over=E, over=E)", 24, "keyword 'over' is given twice")


def test_positional_argument_after_a_keyword() -> None:
    at_line_5("y = softmax(over=E, a)", 21,
              "positional argument after a keyword argument; usage: softmax(a, over=DIM)")


def test_too_many_arguments() -> None:
    at_line_5("y = gelu(a, a)", 13, "gelu takes 1 positional argument, got 2; usage: gelu(a)")


def test_einsum_with_three_operands() -> None:
    at_line_5('y = einsum("BLE,E,E->BL", a, a, a)', 33,
              'einsum takes one or two operands after the spec, got 3; usage: einsum("SPEC", a, [b])')


def test_einsum_spec_and_call_disagree_on_the_operand_count() -> None:
    at_line_5('y = einsum("BLE,EF->BLF", a)', 12,
              'einsum spec "BLE,EF->BLF" has 2 operand(s) but the call passes 1')


def test_einsum_with_no_output_dims() -> None:
    at_line_5('y = einsum("BLE->", a)', 18, "the einsum result has no dims; every value needs at least one dim")


def test_einsum_output_dim_in_no_operand() -> None:
    # The caret sits on the letter: in y = einsum("BLE->BLF", a) F is column 20.
    at_line_5('y = einsum("BLE->BLF", a)', 20, "einsum output dim F appears in no operand")


def test_einsum_spec_with_a_space() -> None:
    at_line_5('y = einsum("BLE, EF->BLF", a, a)', 12, 'malformed einsum spec "BLE, EF->BLF": expected '
              'operand dims and the result, e.g. "BLE,EF->BLF", with no spaces')


def test_einsum_letters_are_upper_case() -> None:
    at_line_5('y = einsum("ble->ble", a)', 13, "einsum letters are dims (upper case), got 'b'")


def test_einsum_letter_twice_in_one_operand() -> None:
    at_line_5('y = einsum("BLEE->BLE", a)', 16, 'dim E appears twice in "BLEE"')


def test_sum_over_the_only_dim() -> None:
    expect_error("model m\ndims E=2\ninput a : f32[E]\ny = sum(a, over=E)\n", 4, 17,
                 "sum over E, the only dim, would leave no dims; every value needs at least one")


def test_gain_with_the_wrong_dims() -> None:
    expect_error(HEADER + "param g : f32[F]\ny = layernorm(a, g, over=E)\n", 6, 18,
                 "the gain must have dims [E] (the over dim), but it has [F]")


def test_gain_must_be_a_name() -> None:
    expect_error(HEADER + "param g : f32[E]\ny = layernorm(a, gelu(g), over=E)\n", 6, 18,
                 "the gain of layernorm must be a name with dims of the over dim")


def test_causal_needs_two_different_dims() -> None:
    at_line_5("y = causal(a, L, L)", 18, "causal needs two different dims (query, key)")


def test_causal_dim_not_in_the_operand() -> None:
    at_line_5("y = causal(a, L, F)", 18, "causal: dim F is not a dim of the operand [B, L, E]")


def test_relabel_between_dims_of_different_sizes() -> None:
    at_line_5("y = relabel(a, L=F)", 16, "relabel L=F: sizes differ (L=4, F=6)")


def test_relabel_without_a_pair() -> None:
    at_line_5("y = relabel(a)", 14, "relabel needs at least one OLD=NEW dim pair; usage: relabel(a, OLD=NEW)")


def test_relabel_with_a_keyword_that_is_not_a_dim() -> None:
    at_line_5("y = relabel(a, over=E)", 16,
              "relabel takes OLD=NEW dim pairs such as L=S, not 'over='; usage: relabel(a, OLD=NEW)")


def test_a_number_is_not_a_tensor_argument() -> None:
    at_line_5("y = gelu(2)", 10, "gelu takes a tensor, not a number")


def test_arithmetic_on_numbers_alone() -> None:
    at_line_5("y = a * (2 + 3)", 10, "an arithmetic op needs at least one tensor operand")


def test_collective_in_a_source_program() -> None:
    at_line_5("y = all_reduce(a, over=x)", 5, "'all_reduce' is a collective: collectives appear only in "
              "sharded programs, where every declaration and statement carries @ LAYOUT")


# --- names ---------------------------------------------------------------------------------
def test_name_used_before_its_definition() -> None:
    expect_error(HEADER + "y = gelu(z)\nz = gelu(a)\n", 5, 10, "'z' is used before its definition on line 6")


def test_undefined_name() -> None:
    at_line_5("y = gelu(zz)", 10, "undefined name 'zz'")


def test_repeat_local_name_used_after_the_block() -> None:
    expect_error(HEADER + "repeat 2 {\n  t = gelu(a)\n}\ny = gelu(t)\n", 8, 10,
                 "'t' is local to the repeat block that defines it (line 6); only rebound outer names "
                 "leave the block")


def test_assigning_a_name_twice_outside_a_repeat() -> None:
    expect_error(HEADER + "y = gelu(a)\ny = exp(a)\n", 6, 1, "'y' is already defined on line 5; names are "
                 "assigned once (only a repeat may rebind an outer name)")


def test_declaring_a_defined_name() -> None:
    at_line_5("param a : f32[E]", 7, "'a' is already defined on line 4; names are assigned once "
              "(only a repeat may rebind an outer name)")


def test_rebinding_that_drops_a_dim() -> None:
    expect_error(HEADER + "repeat 2 {\n  a = sum(a, over=E)\n}\n", 6, 3, "rebinding 'a' changes its dims "
                 "from [B, L, E] to [B, L]; a rebinding keeps the dims, in the same order")


def test_rebinding_that_reorders_dims() -> None:
    expect_error(HEADER + 'repeat 2 {\n  a = einsum("BLE->LBE", a)\n}\n', 6, 3, "rebinding 'a' changes its "
                 "dims from [B, L, E] to [L, B, E]; a rebinding keeps the dims, in the same order")


@pytest.mark.parametrize("stmt, col, word", [
    ("gelu = exp(a)", 1, "gelu"),
    ("param over : f32[E]", 7, "over"),
    ("input model : f32[E]", 7, "model"),
    ("f32 = gelu(a)", 1, "f32"),
])
def test_reserved_word_as_a_tensor_name(stmt: str, col: int, word: str) -> None:
    at_line_5(stmt, col, f"'{word}' is a reserved word and cannot name a tensor")


def test_keyword_as_a_name_is_a_parse_error() -> None:
    at_line_5("repeat = gelu(a)", 1, "'repeat' is a reserved word and cannot be used as a name")


def test_reserved_word_as_the_model_name() -> None:
    expect_error("model gelu\n", 1, 7, "'gelu' is a reserved word and cannot name the model")


def test_invalid_name() -> None:
    at_line_5("yY = gelu(a)", 1, "'yY' is not a valid name: names are lower-case letters, digits and '_', "
              "starting with a letter or '_'")


def test_output_twice() -> None:
    expect_error(HEADER + "output a\noutput a\n", 6, 8, "'a' is already an output (line 5)")


def test_an_assignment_needs_an_op() -> None:
    at_line_5("y = a", 5, "an assignment needs an operation; 'y = a' would only rename a value")


def test_a_number_alone_is_not_a_tensor() -> None:
    at_line_5("y = 2", 5, "a number alone is not a tensor: every value has at least one dim")


# --- numbers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("number", ["1.", ".5", "1e", "4x", "0x10", "1.5.2", "2E"])
def test_malformed_number_in_an_expression(number: str) -> None:
    at_line_5(f"y = a * {number}", 9,
              f"malformed number '{number}': write an integer (4096) or a decimal (0.0625, 1e-6)")


def test_malformed_number_as_a_dim_size() -> None:
    expect_error("model m\ndims B=4x\n", 2, 8,
                 "malformed number '4x': write an integer (4096) or a decimal (0.0625, 1e-6)")


def test_dim_size_must_be_a_whole_number() -> None:
    expect_error("model m\ndims B=2.5\n", 2, 8, "the size of dim B must be a whole number of at least 1, got 2.5")


def test_repeat_count_must_be_positive() -> None:
    expect_error(HEADER + "repeat 0 {\n}\n", 5, 8, "the repeat count must be a whole number of at least 1, got 0")


def test_number_too_large() -> None:
    at_line_5("y = a * 1e999", 9, "the number 1e999 is too large")


# --- layouts and meshes -------------------------------------------------------------------------
def test_pin_on_an_axis_the_mesh_line_lacks() -> None:
    at_line_5("y = gelu(a) @ BLE_q", 15, "layout BLE_q uses mesh axis 'q' but the mesh (x=2, y=2) has axes x, y")


PQ_PROGRAM = """\
model m
mesh p=2, q=2
dims B=4, E=4
input a : f32[B, E] @ B_pE_q
y = gelu(a)
"""


def test_pins_on_p_q_are_fine_with_the_files_mesh() -> None:
    shardc.parse(PQ_PROGRAM)


@pytest.mark.parametrize("text", [PQ_PROGRAM, PQ_PROGRAM.replace("mesh p=2, q=2\n", "")],
                         ids=["with-mesh-line", "without-mesh-line"])
def test_mesh_override_without_the_pinned_axes_errors_at_the_pin(text: str) -> None:
    line = text.split("\n").index("input a : f32[B, E] @ B_pE_q") + 1
    expect_error(text, line, 23, "layout B_pE_q uses mesh axis 'p' but the mesh (x=2, y=2) has axes x, y",
                 mesh=Mesh.parse("2x2"))


def test_axis_used_twice_in_a_layout() -> None:
    at_line_5("y = gelu(a) @ B_xLE_x", 15, "mesh axis 'x' is used twice in layout B_xLE_x")


def test_dim_not_divisible_by_its_axes() -> None:
    err = at_line_5("param w : f32[E, F] @ EF_xy", 23,
                    "dim F of size 6 is not divisible by the 4 chips of x·y (2 x 2) in layout EF_xy")
    assert err.hint == "change the size with --set F=N or choose another mesh"


def test_dim_made_indivisible_by_a_size_override() -> None:
    expect_error("model m\nmesh x=2\ndims B=4\ninput a : f32[B] @ B_x\ny = gelu(a)\n", 4, 20,
                 "dim B of size 3 is not divisible by the 2 chips of x (2) in layout B_x", sizes={"B": 3})


def test_layout_dims_differ_from_the_values_dims() -> None:
    at_line_5("y = gelu(a) @ BEL", 15, "the layout BEL lists dims [B, E, L] but 'y' has dims [B, L, E]")


def test_partial_sums_pinned_in_a_source_program() -> None:
    at_line_5("y = gelu(a) @ BLE (partialsum-x)", 19, "partial sums cannot be pinned in a source program")


def test_pin_on_a_multi_name_output() -> None:
    expect_error(HEADER + "y = gelu(a)\noutput a, y @ BLE\n", 6, 15, "a layout can pin only a single-name output")


def test_mesh_axis_names_are_one_letter() -> None:
    expect_error("model m\nmesh xy=2\n", 2, 6, "mesh axes are one lower-case letter, got 'xy'")


def test_mesh_axis_named_twice() -> None:
    expect_error("model m\nmesh x=2, x=2\n", 2, 11, "mesh axis 'x' is named twice")


def test_mesh_given_twice() -> None:
    expect_error("model m\nmesh x=2\nmesh y=2\n", 3, 1, "the mesh is already given on line 2")


def test_sharded_program_without_a_mesh_line() -> None:
    expect_error("model m\ndims B=4\ninput a : f32[B] @ B\ny = gelu(a) @ B\n", 1, 1,
                 "a sharded program (every statement carries @ LAYOUT) needs a 'mesh' line")


def test_mesh_override_of_a_sharded_program() -> None:
    expect_error("model m\nmesh x=2\ndims B=4\ninput a : f32[B] @ B_x\ny = gelu(a) @ B_x\n", 2, 1,
                 "--mesh 4 cannot change the mesh of a sharded program (mesh x=2); compile the source "
                 "program for that mesh instead", mesh=Mesh.parse("4"))


# --- statement order ----------------------------------------------------------------------------
def test_dims_after_a_declaration() -> None:
    at_line_5("dims Q=2", 1, "'dims' must come before every declaration and statement")


def test_mesh_after_a_declaration() -> None:
    at_line_5("mesh z=2", 1, "'mesh' must come before every declaration and statement")


def test_input_inside_repeat() -> None:
    expect_error(HEADER + "repeat 2 {\n  input q : f32[E]\n}\n", 6, 3,
                 "'input' may not appear inside repeat; declare inputs before it")


@pytest.mark.parametrize("word, stmt", [("dims", "dims Q=2"), ("mesh", "mesh z=2"), ("model", "model q")])
def test_header_statement_inside_repeat(word: str, stmt: str) -> None:
    expect_error(HEADER + f"repeat 2 {{\n  {stmt}\n}}\n", 6, 3, f"'{word}' may not appear inside repeat")


def test_nested_repeat() -> None:
    expect_error(HEADER + "repeat 2 {\n  repeat 3 {\n  }\n}\n", 6, 3, "repeat blocks cannot be nested")


def test_missing_model_line() -> None:
    expect_error("dims B=2\ninput x : f32[B]\n", 1, 1, "a program starts with 'model NAME'")


def test_second_model_line() -> None:
    expect_error("model m\nmodel n\n", 2, 1, "a program has one 'model' statement, and it comes first")


def test_empty_program() -> None:
    expect_error("", 1, 1, "the program is empty: it starts with 'model NAME'")


def test_program_of_comments_only() -> None:
    expect_error("# nothing here\n", 1, 15, "the program is empty: it starts with 'model NAME'")


# --- syntax: what was expected, in words -----------------------------------------------------------
@pytest.mark.parametrize("stmt, col, message", [
    ("input x : bf16[B L]", 18, "expected ',' or ']' after a dim"),
    ("param w : f32[E, F", 19, "expected ',' or ']' after 'F', found end of line "
                               "(parentheses and brackets close on the line that opens them)"),
    ("param w f32[E]", 9, "expected ':' after 'w', found 'f32'"),
    ("param w : f32", 14, "expected '[' after 'f32', found end of line"),
    ("param w : f32[]", 15, "expected a dim after '[', found ']'"),
    ("param w : f32[E, ff]", 18, "expected a dim after ',', found 'ff'"),
    ("y = ", 5, "expected an expression after '=', found end of line"),
    ("y = a +", 8, "expected an expression after '+', found end of line"),
    ("y = a * * a", 9, "expected an expression after '*', found '*'"),
    ("y = gelu(a,)", 12, "expected an argument after ',', found ')'"),
    ("y = gelu(", 10, "expected an argument or ')' after '(', found end of line "
                      "(parentheses and brackets close on the line that opens them)"),
    ('y = einsum("BLE->BLE" a)', 23, "expected ')' or ',' after \"BLE->BLE\", found 'a'"),
    ("y = softmax(a, over=2)", 21, "expected a dim or a name after '=', found number 2"),
    ("y = gelu(a) @", 14, "expected a dim after '@', found end of line"),
    ("y = gelu(a) @ BLE _x", 19, "a layout is one token: write BLE_x with no space"),
    ("y = gelu(a) @ BLE (partialsum- x)", 19,
     "malformed partial sum: write (partialsum-AXES) with no spaces, e.g. (partialsum-yz)"),
    ("y = gelu(a) $", 13, "unexpected character '$'"),
    ('y = einsum("BLE->BLE, a)', 12, "unterminated string: a string ends with '\"' on the same line"),
    ("output", 7, "expected a name after 'output', found end of line"),
    ("repeat n {", 8, "expected a number after 'repeat', found 'n'"),
    ("repeat 2", 9, "expected '{' after number 2, found end of line"),
    ("repeat 2 { y = gelu(a)", 12, "expected end of line after '{', found 'y'"),
    ("}", 1, "'}' has no open repeat block"),
])
def test_parse_error_says_what_was_expected(stmt: str, col: int, message: str) -> None:
    at_line_5(stmt, col, message)


def test_mesh_entries_need_commas() -> None:
    expect_error("model m\nmesh x=2 y=2\n", 2, 10, "expected ',' or end of line after number 2, found 'y'")


def test_close_brace_must_stand_alone() -> None:
    expect_error(HEADER + "repeat 2 {\n  y = gelu(a) }\n}\n", 6, 15, "'}' must stand alone on its line")


def test_repeat_not_closed() -> None:
    expect_error(HEADER + "repeat 2 {\n  y = gelu(a)\n", 6, 14,
                 "the repeat block is not closed: expected '}' on a line of its own")


def test_invisible_character_is_named_by_its_code_point() -> None:
    expect_error("model m\rdims B=2\n", 1, 8, "unexpected character U+000D")


# --- files ------------------------------------------------------------------------------------------
def test_load_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.model"
    with pytest.raises(ShardcError) as info:
        shardc.load(path)
    assert info.value.message == f"no such file: {path}"
    assert info.value.line is None and info.value.col is None
    assert info.value.render() == f"error: no such file: {path}"


def test_load_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ShardcError) as info:
        shardc.load(tmp_path)
    assert info.value.message == f"{tmp_path} is a directory, not a .model file"


def test_load_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.model"
    path.write_bytes(b"model m  # caf\xe9\n")
    with pytest.raises(ShardcError) as info:
        shardc.load(path)
    assert info.value.message.startswith(f"{path} is not UTF-8 text")


def test_load_reports_errors_under_the_files_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.model"
    path.write_text("model m\ndims B=2\ninput x : f32[Q]\n")
    with pytest.raises(ShardcError) as info:
        shardc.load(path)
    assert info.value.render().split("\n")[0] == f"{path}:3:15: error: undeclared dim Q"


# --- errors that are not in the source text ---------------------------------------------------------
def test_size_override_of_an_undeclared_dim() -> None:
    with pytest.raises(ShardcError) as info:
        shardc.parse("model m\ndims B=4\ninput a : f32[B]\n", FILE, sizes={"Q": 2})
    assert info.value.render() == "error: --set Q=2: the program declares no dim Q (it declares B)"


def test_size_override_must_be_positive() -> None:
    with pytest.raises(ShardcError) as info:
        shardc.parse("model m\ndims B=4\ninput a : f32[B]\n", FILE, sizes={"B": 0})
    assert info.value.message == "--set B=0: a dim size is a whole number of at least 1"


def test_every_error_converts_to_json() -> None:
    with pytest.raises(ShardcError) as info:
        shardc.parse(HEADER + "y = gelu(zz)\n", FILE)
    assert info.value.to_json() == {
        "error": {"file": FILE, "line": 5, "col": 10, "message": "undefined name 'zz'"}}
