"""The parameter contract: every default is declared once, in its stage's Params, and the
CLI, the app and the loop read it from there; presets and experiment files resolve over
it; the dry-run plan prices the paper's protocol without touching anything."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.core.config import ROOT
from pipeline.loop.iterate import LoopParams
from pipeline.loop.presets import deviations, load_config, resolve
from pipeline.models.target import GenParams
from pipeline.shells.cli import cli
from pipeline.stages.cluster import ClusterParams
from pipeline.stages.evaluate import EvalParams
from pipeline.stages.select import SelectParams, stratify
from pipeline.stages.synthesize import SynthParams, plan_calls
from pipeline.stages.train import TrainParams

COMMANDS = {"synthesize": SynthParams, "select": SelectParams, "train": TrainParams,
            "evaluate": EvalParams, "cluster": ClusterParams, "extract": GenParams}


def _cli_default(opt):
    """An option's default as the command receives it (lists through their callback)."""
    d = opt.default
    if opt.callback and isinstance(d, str):
        return opt.callback(None, opt, d)
    return d


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_defaults_are_the_dataclass_defaults(command):
    cls = COMMANDS[command]
    opts = {p.name: p for p in cli.commands[command].params}
    exposed = [f.name for f in cls.fields() if f.metadata.get("cli", True)]
    assert exposed, cls
    for name in exposed:
        assert name in opts, f"{command}: --{name} missing"
        assert _cli_default(opts[name]) == cls.default(name), (command, name)
        assert opts[name].help.startswith(cls.help(name)[:20]), (command, name)


def test_iterate_options_take_their_defaults_from_the_preset():
    """`sei iterate`'s loop options default to None so that a preset or an experiment file
    decides; their help shows the dataclass default."""
    opts = {p.name: p for p in cli.commands["iterate"].params}
    for name in ("iterations", "limit_train", "eval_limit", "arms", "mode"):
        assert opts[name].default is None, name
    assert f"[default: {LoopParams.default('limit_train')}]" in opts["limit_train"].help


def test_app_forms_open_on_the_dataclass_defaults(clustered):
    """The Synthesis and Selection pages' widgets (under streamlit's AppTest) show the
    stage defaults, not numbers typed into the page."""
    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT / "dashboard"))
    at = AppTest.from_file(str(ROOT / "dashboard/pages/5_Synthesis.py"),
                           default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="syn_budget").value == SynthParams.default("budget")
    assert at.number_input(key="syn_per_call").value == SynthParams.default("per_call")
    assert at.number_input(key="syn_k").value == SynthParams.default("k")
    at = AppTest.from_file(str(ROOT / "dashboard/pages/6_Selection.py"),
                           default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="sel_keep").value == SelectParams.default("top")
    assert at.number_input(key="sel_good").value == SelectParams.default("n_good")
    assert at.selectbox(key="sel_method").value == SelectParams.default("method")


def test_paper_preset_is_the_papers_protocol():
    p = resolve("paper")
    syn, sel, tr = p.stage("synthesize"), p.stage("select"), p.stage("train")
    assert (syn.k, syn.per_call, syn.budget, syn.novelty) == (8, 20, 10_000, 0.7)
    assert (sel.n_good, sel.n_bad, sel.top) == (50, 50, 0.05)
    assert (tr.r, tr.alpha, tr.dropout, tr.lr, tr.schedule, tr.warmup, tr.batch_size,
            tr.epochs) == (8, 16, 0.1, 2e-5, "linear", 0.03, 1, 3)
    assert sorted(tr.target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert {p.stage(k).max_new_tokens for k in ("extract", "select", "evaluate")} == {512}
    assert (p.iterations, p.mode) == (3, "scratch")
    # the demo preset is the stage defaults themselves
    d = resolve("demo")
    assert d.stage("synthesize").budget == SynthParams.default("budget")
    assert d.stage("train").lr == TrainParams.default("lr")


def test_config_files_resolve_over_the_preset_and_typos_are_refused(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text('preset = "paper"\niterations = 2\ntrain_sets = ["gsm8k:train"]\n'
                    '[synthesize]\nbudget = 2000\n[train]\nlr = 1e-4\n')
    p = resolve(None, load_config(toml), {"eval_limit": 50})
    assert (p.preset, p.iterations, p.train_sets, p.eval_limit) == \
        ("paper", 2, ["gsm8k/train"], 50)
    assert p.stage("synthesize").budget == 2000 and p.stage("synthesize").k == 8
    assert p.stage("train").lr == 1e-4 and p.stage("train").r == 8
    dev = deviations(p.resolved())
    assert dev["synthesize.budget"] == [10_000, 2000] and dev["train.lr"] == [2e-5, 1e-4]
    assert "train.r" not in dev
    yaml_ = tmp_path / "exp.yaml"
    yaml_.write_text("preset: demo\nselect:\n  n_goood: 5\n")
    with pytest.raises(ValueError, match="n_goood"):
        resolve(None, load_config(yaml_))
    bad = tmp_path / "bad.toml"
    bad.write_text("iterations = [\n")
    with pytest.raises(ValueError, match="bad.toml"):
        load_config(bad)


def test_dry_run_prints_the_plan_and_creates_nothing(tmp_path):
    db = tmp_path / "none" / "sei.duckdb"
    r = CliRunner().invoke(cli, ["--db", str(db), "iterate", "--preset", "paper",
                                 "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["config"]["synthesize"]["budget"] == 10_000
    assert out["config"]["train"]["lr"] == 2e-5
    est = out["estimate"]["per_iteration"]
    # 10,000 proposals, half kept (the stated assumption), each on 100 dev problems
    assert est["generations: select (one-shot: candidates x dev)"] == 5000 * 100
    assert est["GPU-hours (7-8B target, stated rates)"] > 0
    assert out["estimate"]["assumptions"]
    assert not db.exists() and not db.parent.exists()
    # text form for people
    r = CliRunner().invoke(cli, ["--db", str(db), "iterate", "--preset", "paper",
                                 "--dry-run", "-p", "train.epochs=2"])
    assert r.exit_code == 0, r.output
    assert "preset paper; deviations: train.epochs 3 -> 2" in r.output
    # what will run, in words, and that a run would be refused without an instructor
    assert out["pieces"]["analysis"] == "the offline analyzer (no instructor configured)"
    assert out["pieces"]["clustering"] == "llm"
    assert out["pieces"]["candidates"].startswith("instructor synthesis by an instructor "
                                                  "(none configured)")
    assert out["refused"].startswith("the paper preset's synthesis and LLM clustering need "
                                     "an instructor")
    assert "warning: a run would be refused: the paper preset's" in r.output


def test_the_paper_preset_without_an_instructor_is_refused_before_anything_runs(tmp_path):
    """Issue 36, item 3: `--preset paper` on a machine with no instructor stopped only at
    synthesis, hours in, or ran the offline pieces silently. It is refused in one line,
    before any set is imported or anything generated; running it offline is an explicit
    deviation, shown as one by the dry run."""
    from pipeline.storage.store import Store

    db = tmp_path / "sei.duckdb"
    r = CliRunner().invoke(cli, ["--db", str(db), "iterate", "--preset", "paper"])
    assert r.exit_code == 1, r.output
    [line] = [x for x in r.output.splitlines() if x.strip()]
    assert line.startswith("Error: the paper preset's synthesis and LLM clustering need an "
                           "instructor, and none is configured: set SEI_INSTRUCTOR_MODEL")
    assert "-p synthesize.synthesizer=offline -p cluster.method=hdbscan" in line
    # no set imported (GSM8K and MATH would be), nothing generated
    assert Store(db).count("problems") == 0 and Store(db).runs() == []
    off = ["-p", "synthesize.synthesizer=offline", "-p", "cluster.method=hdbscan"]
    r = CliRunner().invoke(cli, ["--db", str(db), "iterate", "--preset", "paper",
                                 "--dry-run", "--json", *off])
    out = json.loads(r.output)
    assert out["refused"] is None
    assert out["deviations"]["synthesize.synthesizer"] == ["instructor", "offline"]
    assert out["deviations"]["cluster.method"] == ["llm", "hdbscan"]
    assert out["pieces"]["candidates"].startswith("offline synthesis: template redraws")


def test_dev_set_and_budget_are_split_across_datasets():
    assert stratify(10, [100, 100]) == [5, 5]
    assert stratify(10, [2, 100]) == [2, 8]       # a small pool gives what it has
    assert stratify(5, [1, 1]) == [1, 1]
    types = [{"type_id": 1, "share": 0.5, "title": "a", "case_ids": [1, 2, 3, 10]},
             {"type_id": 2, "share": 0.5, "title": "b", "case_ids": [4, 11, 12, 13]}]
    case_ds = {1: "gsm8k", 2: "gsm8k", 3: "gsm8k", 4: "gsm8k",
               10: "math", 11: "math", 12: "math", 13: "math"}
    calls = plan_calls(types, SynthParams(budget=40, per_call=5, k=2), case_ds)
    per_ds = {}
    for c in calls:
        per_ds[c["dataset"]] = per_ds.get(c["dataset"], 0) + c["n"]
        # a call shows the cases of its own dataset only
        assert {case_ds[x] for x in c["case_ids"]} == {c["dataset"]}
    assert per_ds == {"gsm8k": 20, "math": 20}
    # within gsm8k type 1 holds 3 of 4 cases: 15 of its 20 proposals
    assert sum(c["n"] for c in calls if c["dataset"] == "gsm8k"
               and c["type"]["type_id"] == 1) == 15


def test_loop_params_refuse_overlap_and_unknown_arms():
    with pytest.raises(ValueError, match="train and evaluation"):
        LoopParams(train_sets=["gsm8k:test"], eval_sets=["gsm8k/test"])
    with pytest.raises(ValueError, match="arms"):
        LoopParams(arms=["sei", "randum"])


def test_sei_help_runs_without_importing_torch():
    """The CLI (and its option decorators) load without the model stack."""
    r = subprocess.run([sys.executable, "-c", "import sys, pipeline.shells.cli; "
                        "print('torch' in sys.modules)"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# -- one contract for every stage: its Params, read alike by the CLI, the jobs and the app ----

CLI_OF = {"extract": ["extract"], "analyze": ["analyze"], "cluster": ["cluster"],
          "quickstart": ["quickstart"], "synthesize": ["synthesize"], "select": ["select"],
          "train": ["train"], "evaluate": ["evaluate"]}
# (`sei iterate` also takes section shortcuts and config files: its flags are checked
# against LoopParams above, test_iterate_options_take_their_defaults_from_the_preset)
NOT_PARAMS = {"background", "help", "dry_run", "yes", "config", "estimate_only"}
# flags that a command packs into one field: analyze's instructor settings become its
# `instructor` (a dict, or "offline"); its --run values become `run_ids`
PACKED = {"analyze": {"instructor_model", "base_url", "offline", "timeout_s", "case_time_s",
                      "breaker_after"},
          "synthesize": {"types_"}}  # --types, the field `types`


def test_every_registered_stage_has_params_that_refuse_an_unknown_key(tmp_path):
    from pipeline.core.params import Params
    from pipeline.loop import jobs
    from pipeline.loop.registry import STAGES, parse
    from pipeline.storage.store import Store

    assert set(STAGES) >= {"extract", "analyze", "cluster", "retitle", "quickstart",
                           "synthesize", "select", "train", "evaluate", "iterate", "ticks"}
    s = Store(tmp_path / "sei.duckdb")
    for kind, d in STAGES.items():
        assert issubclass(d.params, Params), kind
        assert isinstance(parse(kind, {}), d.params), kind  # the defaults alone are valid
        with pytest.raises(ValueError, match="bogus_key"):
            parse(kind, {"bogus_key": 1})
        with pytest.raises(ValueError, match="bogus_key"):  # refused before a row or a process
            jobs.submit(s, kind, {"bogus_key": 1})
    assert s.jobs() == []
    # a known key is the stage's: what a job gave is what the stage is handed
    assert parse("extract", {"dataset": "gsm8k", "limit": 5}).limit == 5
    assert parse("retitle", {"type_ids": [3]}).type_ids == [3]
    assert parse("iterate", {"iterations": 2}).iterations == 2  # through the presets


def test_every_cli_option_of_a_stage_is_a_field_of_its_params():
    from pipeline.loop.registry import STAGES
    from pipeline.shells.cli import cli

    for kind, path in CLI_OF.items():
        cmd = cli
        for name in path:
            cmd = cmd.commands.get(name) or cmd.commands[f"{name}_cmd"]
        names = {p.name for p in cmd.params} - NOT_PARAMS - PACKED.get(kind, set())
        fields = STAGES[kind].params.names()
        assert names <= fields, (kind, sorted(names - fields))


def test_the_jobs_page_draws_every_stage_from_its_params():
    """The Jobs page offers every registered stage (not 4 of them), each as a form of its
    Params' fields with their defaults, and submits only what a person changed."""
    from streamlit.testing.v1 import AppTest

    from pipeline.loop.registry import STAGES

    sys.path.insert(0, str(ROOT / "dashboard"))
    at = AppTest.from_file(str(ROOT / "dashboard/pages/8_Jobs.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(at.selectbox(key="job-kind").options) == sorted(
        f"{k}: {d.help}" for k, d in STAGES.items())
    for kind in ("extract", "quickstart", "retitle"):
        at.selectbox(key="job-kind").set_value(kind).run()
        assert not at.exception, [e.value for e in at.exception]
        cls = STAGES[kind].params
        drawn = {w.key.removeprefix(f"job-{kind}-"): w for w in
                 [*at.number_input, *at.text_input, *at.selectbox, *at.checkbox]
                 if (w.key or "").startswith(f"job-{kind}-")}
        assert set(drawn) == cls.names(), kind
        for name, w in drawn.items():
            v, d = w.value, cls.default(name)
            assert v == d or (d is None and v == "") or v == ",".join(map(str, d or [])) \
                or (isinstance(d, dict) and v == "{}"), (kind, name, v, d)
