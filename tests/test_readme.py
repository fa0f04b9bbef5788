from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash") + 1
    return lines[start : lines.index("```", start)]


def test_readme_opens_with_exactly_two_commands():
    assert (ROOT / "README.md").read_text().splitlines()[0].startswith("# ")
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m opentslm_hub.quickstart")
    assert commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert readme_commands()[1] in ci_lines
