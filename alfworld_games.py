"""Writes the small hand-made ALFWorld games shipped in alfworld_data/ (run: python alfworld_games.py), and
the searching expert's prior (python alfworld_games.py --prior DATA: DATA holds the release's json_2.1.1/).

ALFWorld's real games come from a download that is not reachable here, so this script writes games
in ALFWorld's own on-disk format (initial_state.pddl, traj_data.json, game.tw-pddl) from the compact
descriptions below; the real engine then plays them like downloaded ones. Scenes stay small (<= 7
receptacles) because the PDDL planner behind the expert slows down sharply on big scenes.
Each game is checked by playing the planner's plan to a win; its plan is stored as the walkthrough.
"""
import argparse
import glob
import json
import os
import random
import re
import shutil
import textwrap
from collections import Counter

from alfworld.agents.utils.misc import add_task_to_grammar
from alfworld.gen import constants, goal_library
from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alfworld_data", "json_2.1.1")
PRIOR_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alfworld_data", "search_prior.json")

# Rooms: scene number -> receptacles. Seen scenes (1-4) host train and valid_seen games; 5-7 are
# unseen (valid_unseen only), as ALFWorld's seen/unseen splits differ by room.
SCENES = {
    1: "CounterTop 1, Cabinet 1, Cabinet 2, Fridge 1, Microwave 1, SinkBasin 1, DiningTable 1",
    2: "Desk 1, Drawer 1, Drawer 2, Shelf 1, Bed 1, SideTable 1, GarbageCan 1",
    3: "CounterTop 1, Cabinet 1, Fridge 1, Microwave 1, SinkBasin 1, StoveBurner 1, Shelf 1",
    4: "Sofa 1, CoffeeTable 1, SideTable 1, Drawer 1, Cabinet 1, ArmChair 1",
    5: "CounterTop 1, CounterTop 2, Cabinet 1, Fridge 1, Microwave 1, SinkBasin 1",
    6: "Dresser 1, Drawer 1, Desk 1, Bed 1, Shelf 1, SideTable 1",
    7: "DiningTable 1, Cabinet 1, Drawer 1, Fridge 1, Microwave 1, SinkBasin 1, GarbageCan 1",
}

# Games by task type: (split, object, target (a receptacle, or the lamp for look_at_obj_in_light),
# scene, contents: receptacle -> the objects in or on it; unlisted receptacles are empty).
GAMES_BY_TYPE = {
    "pick_and_place_simple": [
        ("train", "Mug", "Shelf", 2, {"Desk 1": "Mug, Pen", "Drawer 1": "Pencil"}),
        ("train", "Apple", "DiningTable", 1, {"Fridge 1": "Apple, Egg", "CounterTop 1": "Knife"}),
        ("train", "RemoteControl", "Sofa", 4, {"Drawer 1": "RemoteControl", "CoffeeTable 1": "Book"}),
        ("valid_seen", "Pen", "Drawer", 2, {"SideTable 1": "Pen, CellPhone", "Desk 1": "Book"}),
        ("valid_unseen", "Book", "Bed", 6, {"Drawer 1": "Book", "Desk 1": "Pen, Pencil"}),
    ],
    "look_at_obj_in_light": [
        ("train", "Book", "DeskLamp", 2, {"Bed 1": "Book, Pillow", "SideTable 1": "DeskLamp"}),
        ("train", "CellPhone", "DeskLamp", 4, {"Cabinet 1": "CellPhone", "SideTable 1": "DeskLamp, KeyChain"}),
        ("train", "Pencil", "DeskLamp", 2, {"Drawer 2": "Pencil", "Desk 1": "DeskLamp, Book"}),
        ("valid_seen", "KeyChain", "DeskLamp", 4, {"Sofa 1": "KeyChain", "CoffeeTable 1": "DeskLamp"}),
        ("valid_unseen", "Pillow", "DeskLamp", 6, {"Bed 1": "Pillow", "Dresser 1": "DeskLamp, Book"}),
    ],
    "pick_clean_then_place_in_recep": [
        ("train", "Mug", "CounterTop", 1, {"DiningTable 1": "Mug, Bread", "Cabinet 1": "Bowl"}),
        ("train", "Plate", "Cabinet", 3, {"CounterTop 1": "Plate, Fork"}),
        ("train", "Spoon", "DiningTable", 1, {"Cabinet 2": "Spoon", "CounterTop 1": "Egg"}),
        ("valid_seen", "Cup", "Shelf", 3, {"Cabinet 1": "Cup, Plate"}),
        ("valid_unseen", "Pan", "CounterTop", 5, {"Cabinet 1": "Pan", "CounterTop 2": "Apple"}),
    ],
    "pick_heat_then_place_in_recep": [
        ("train", "Egg", "CounterTop", 1, {"Fridge 1": "Egg, Lettuce", "DiningTable 1": "Mug"}),
        ("train", "Mug", "Shelf", 3, {"CounterTop 1": "Mug", "Fridge 1": "Tomato"}),
        ("train", "Bread", "DiningTable", 1, {"Cabinet 2": "Bread", "CounterTop 1": "Apple"}),
        ("valid_seen", "Tomato", "CounterTop", 3, {"Fridge 1": "Tomato, Egg"}),
        ("valid_unseen", "Apple", "DiningTable", 7, {"Cabinet 1": "Apple", "Drawer 1": "Fork"}),
    ],
    "pick_cool_then_place_in_recep": [
        ("train", "Apple", "CounterTop", 1, {"DiningTable 1": "Apple, Bread"}),
        ("train", "Plate", "Shelf", 3, {"CounterTop 1": "Plate, Potato"}),
        ("train", "Cup", "Cabinet", 1, {"CounterTop 1": "Cup", "SinkBasin 1": "Mug"}),
        ("valid_seen", "Bowl", "DiningTable", 1, {"Cabinet 1": "Bowl, Cup"}),
        ("valid_unseen", "WineBottle", "CounterTop", 5, {"Cabinet 1": "WineBottle", "CounterTop 1": "Egg"}),
    ],
    "pick_two_obj_and_place": [
        ("train", "Pencil", "Drawer", 2, {"Desk 1": "Pencil, Book", "Shelf 1": "Pencil"}),
        ("train", "Book", "CoffeeTable", 4, {"Sofa 1": "Book", "Cabinet 1": "Book, KeyChain"}),
        ("train", "Egg", "Fridge", 3, {"CounterTop 1": "Egg, Egg, Bread"}),
        ("valid_seen", "CellPhone", "Bed", 2, {"Drawer 1": "CellPhone", "Desk 1": "CellPhone, Pen"}),
        ("valid_unseen", "KeyChain", "Dresser", 6, {"Shelf 1": "KeyChain", "SideTable 1": "KeyChain"}),
    ],
}
GAMES = [(split, task_type, *rest) for task_type, rows in GAMES_BY_TYPE.items() for split, *rest in rows]

PROPERTIES = {"cleanable": "Cleanable", "heatable": "Heatable", "coolable": "Coolable",
              "toggleable": "Toggleable", "sliceable": "Sliceable"}


def entity_id(name):
    """'Drawer 1' -> 'Drawer_bar_1', shown as 'drawer N': ALFWorld's demangler numbers the objects of
    a kind itself (in reverse order of id). Sinks keep the real data's naming ('sinkbasin N')."""
    kind, number = name.split()
    if kind == "SinkBasin":
        return f"Sink_bar_{number}_bar_SinkBasin"
    return f"{kind}_bar_{number}"


def scene_facts(receptacles, contents):
    """Objects and :init facts of a scene: one location per receptacle, the agent at loc_bar_0."""
    objects, facts = ["agent1 - agent", "loc_bar_0 - location"], ["(atLocation agent1 loc_bar_0)"]
    counts = {}
    for i, recep in enumerate(receptacles, 1):
        kind, rid, loc = recep.split()[0], entity_id(recep), f"loc_bar_{i}"
        objects += [f"{rid} - receptacle", f"{loc} - location"]
        facts += [f"(receptacleType {rid} {kind}Type)", f"(receptacleAtLocation {rid} {loc})"]
        if kind in constants.OPENABLE_CLASS_SET:
            facts.append(f"(openable {rid})")
        for kind_o in filter(None, (o.strip() for o in contents.get(recep, "").split(","))):
            counts[kind_o] = counts.get(kind_o, 0) + 1
            oid = entity_id(f"{kind_o} {counts[kind_o]}")
            objects.append(f"{oid} - object")
            facts += [f"(objectType {oid} {kind_o}Type)", f"(inReceptacle {oid} {rid})",
                      f"(objectAtLocation {oid} {loc})"]
            facts += [f"({p} {oid})" for p, cls in PROPERTIES.items() if kind_o in constants.VAL_ACTION_OBJECTS[cls]]
            if kind_o not in constants.VAL_ACTION_OBJECTS["Toggleable"]:
                facts.append(f"(pickupable {oid})")
    rtypes = sorted({r.split()[0] for r in receptacles})
    facts += [f"(canContain {r}Type {o}Type)" for r in rtypes for o in sorted(counts)
              if o in constants.VAL_RECEPTACLE_OBJECTS.get(r, ())]
    types = [f"{o}Type - otype" for o in sorted(counts)] + [f"{r}Type - rtype" for r in rtypes]
    return objects + types, facts


def problem_pddl(name, task_type, params, receptacles, contents):
    objects, facts = scene_facts(receptacles, contents)
    goal = goal_library.gdict[task_type]["pddl"].format(
        obj=params["object_target"], recep=params["parent_target"], toggle=params["toggle_target"])
    goal = goal.replace("#", "-").rstrip().removesuffix(")")  # the library's goal also closes the problem
    goal = textwrap.indent(textwrap.dedent(goal).strip(), "    ")
    lines = [f"(define (problem {name})", "    (:domain alfred)", "    (:objects"]
    lines += [f"        {o}" for o in objects] + ["    )", "    (:init"]
    lines += [f"        {f}" for f in facts] + ["    )", goal, ")", ""]
    return "\n".join(lines)


def check_game(name, task_type, obj, target, receptacles, contents):
    """Clear errors for descriptions whose goal cannot be reached: the planner's translator would
    only fail with an obscure KeyError."""
    placed = [o.strip() for objs in contents.values() for o in objs.split(",")]
    needed = {obj: 2 if task_type == "pick_two_obj_and_place" else 1}
    if task_type == "look_at_obj_in_light":
        needed[target] = 1
    elif target not in {r.split()[0] for r in receptacles} or obj not in constants.VAL_RECEPTACLE_OBJECTS[target]:
        raise ValueError(f"{name}: the scene has no {target} that can hold a {obj}")
    problems = [f"receptacle {r!r} is not in the scene" for r in contents if r not in receptacles]
    problems += [f"needs {n} {o} in the scene" for o, n in needed.items() if placed.count(o) < n]
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))


def game_files(split, task_type, obj, target, scene, contents):
    """(folder relative to OUT_DIR, traj_data, problem text) of one game description."""
    receptacles = [r.strip() for r in SCENES[scene].split(",")]
    lamp = task_type == "look_at_obj_in_light"
    check_game(f"{split} {task_type}-{obj}-{target}-{scene}", task_type, obj, target, receptacles, contents)
    params = {"object_target": obj, "parent_target": "" if lamp else target,
              "toggle_target": target if lamp else "", "mrecep_target": "", "object_sliced": False}
    folder = f"{split}/{task_type}-{obj}-None-{target}-{scene}/trial_1"
    traj = {"task_type": task_type, "pddl_params": params, "scene": {"scene_num": scene}}
    return folder, traj, problem_pddl(folder.replace("/", "_"), task_type, params, receptacles, contents)


def solve(gamefile):
    """The planner's plan played to a win from the start (raises if it does not win)."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredExpertType

    planner = AlfredExpert(expert_type=AlfredExpertType.PLANNER)  # alfworld 0.4.2's AlfredTWEnv drops this option
    env = textworld.start(gamefile, textworld.EnvInfos(won=True), wrappers=[AlfredDemangler(), planner])
    state, plan = env.reset(), []
    while not state["won"] and len(plan) < 40 and state["extra.expert_plan"]:
        plan.append(state["extra.expert_plan"][0])
        state, _, _ = env.step(plan[-1])
    env.close()
    if not state["won"]:
        raise RuntimeError(f"{gamefile}: the planner does not win (played {plan})")
    return plan


def write_game(folder, traj, problem, domain, grammar, out_dir=OUT_DIR):
    path = os.path.join(out_dir, folder)
    os.makedirs(path)
    random.seed(folder)  # the task sentence is drawn from templates with `random`: fix it per game
    game = {"pddl_domain": domain, "grammar": add_task_to_grammar(grammar, traj), "pddl_problem": problem}
    for name, text in (("initial_state.pddl", problem), ("traj_data.json", json.dumps(traj, indent=2)),
                       ("game.tw-pddl", json.dumps(game))):
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    game.update(solvable=True, walkthrough=solve(os.path.join(path, "game.tw-pddl")))
    with open(os.path.join(path, "game.tw-pddl"), "w") as f:
        json.dump(game, f)
    return game["walkthrough"]


def search_prior(data_dir):
    """{object type: {receptacle type: share}} over the train split's games: of the receptacles of a type
    in the rooms where such an object exists, the share that hold one at the start (types as the game
    writes them: "mug", "countertop"). The searching expert (envs.py) checks the likeliest first."""
    held, offered = Counter(), Counter()
    games = sorted(glob.glob(os.path.join(data_dir, "json_2.1.1", "train", "*", "*", "game.tw-pddl")))
    if not games:
        raise FileNotFoundError(f"no train games under {data_dir}/json_2.1.1/train")
    for path in games:
        with open(path) as f:
            problem = json.load(f)["pddl_problem"]
        rtype = dict(re.findall(r"\(receptacleType (\S+) (\S+)Type\)", problem))
        otype = dict(re.findall(r"\(objectType (\S+) (\S+)Type\)", problem))
        contents = {}
        for obj, recep in re.findall(r"\(inReceptacle (\S+) (\S+)\)", problem):
            contents.setdefault(recep, set()).add(otype[obj].lower())
        present = {t.lower() for t in otype.values()}
        for recep, kind in rtype.items():
            for o in present:
                offered[o, kind.lower()] += 1
                held[o, kind.lower()] += o in contents.get(recep, ())
    prior = {}
    for (o, r), n in sorted(offered.items()):
        if held[o, r]:
            prior.setdefault(o, {})[r] = round(held[o, r] / n, 4)
    return prior


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", metavar="DATA", help="write alfworld_data/search_prior.json from DATA's train games")
    args = parser.parse_args()
    if args.prior:
        with open(PRIOR_FILE, "w") as f:
            json.dump(search_prior(args.prior), f, indent=1, sort_keys=True)
            f.write("\n")
        return
    with open(ALFRED_PDDL_PATH) as f:
        domain = f.read()
    with open(ALFRED_TWL2_PATH) as f:
        grammar = f.read()
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    for game in GAMES:
        folder, traj, problem = game_files(*game)
        plan = write_game(folder, traj, problem, domain, grammar)
        print(f"{folder}: {len(plan)} steps")


if __name__ == "__main__":
    main()
