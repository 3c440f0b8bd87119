"""SciWorld, ALFWorld and WebShop behind one small interface, with their experts.

    env = make_env("sciworld", "dev", tasks=["find-plant"])
    first = env.reset(env.task_ids()[0])      # the task and the first observation
    obs, reward, done, info = env.step("look around")
    env.expert_action()                       # the expert's next action from here, or None
    env.expert_thought()                      # why it does that, when the expert says (else None)
    env.expert_plan()                         # its whole plan from here ([] once won, None: no way to win)
    env.undo()                                # take the last step back

Also here: the record of an agent step as the judge sees it (AgentStep, with the StepFacts the
environment and its expert know about it), which tasks to play (ETO's evaluation lists, an even
draw across task families), and each benchmark's metric (summarize). rollout.py plays the episodes.
Imports no other module of this project.
"""
import contextlib
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import lru_cache

import requests

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the record of a step

@dataclass
class StepFacts:
    """What the environment and its expert know about one agent step, for the judge. rejected: the
    engine did not take the action (None: not known, e.g. a made-up step); repeated: the same action
    got the same observation earlier, with no progress since; irreversible: the step ended the
    episode without success, or left the expert no way to finish; plan_before, plan_after: the length
    of the expert's plan around the step (None: no expert, or no way to finish); expert_before,
    expert_after: the expert's next action around it; expert_plan_after: its plan after it;
    expert_thought_after: why the expert does expert_after, when it says (ALFWorld's searching expert)."""
    rejected: bool | None = None
    repeated: bool = False
    irreversible: bool = False
    plan_before: int | None = None
    plan_after: int | None = None
    expert_before: str | None = None
    expert_after: str | None = None
    expert_plan_after: list = field(default_factory=list)
    expert_thought_after: str | None = None


@dataclass
class AgentStep:
    """One step of the agent as the judge is shown it: where it happened, the history before it, the
    agent's reply (its thought and action parsed out; None when absent), what the environment
    answered, and the facts. undo_if_wrong: a step that cannot be undone is taken back by the run
    when judged wrong (the judge is told so)."""
    env: str
    split: str
    task_id: str
    instruction: str
    task: str
    history: list
    reply: str
    thought: str | None
    action: str | None
    observation: str
    reward: float = 0.0
    done: bool = False
    facts: StepFacts = field(default_factory=StepFacts)
    undo_if_wrong: bool = False


def expert_view(env):
    """(the expert's plan, its next action, its thought for it) in the env's current state; (None,
    None, None) without an expert or without a way to finish."""
    plan = env.expert_plan()
    return (plan, env.expert_action(), env.expert_thought()) if plan else (plan, None, None)


def step_facts(before, after, info, done, repeated):
    """The StepFacts of a step. before, after: expert_view() around it; info, done: the env's answer
    to it; repeated: whether the same action got the same observation earlier with no progress since,
    or went back where the expert had already looked (info["revisit"], ALFWorld's searching expert)."""
    (plan_before, expert_before, _), (plan_after, expert_after, thought_after) = before, after
    return StepFacts(rejected=info["invalid"], repeated=repeated or info.get("revisit", False),
                     irreversible=done and not info["won"] or plan_before is not None and plan_after is None,
                     plan_before=None if plan_before is None else len(plan_before),
                     plan_after=None if plan_after is None else len(plan_after),
                     expert_before=expert_before, expert_after=expert_after, expert_plan_after=plan_after or [],
                     expert_thought_after=thought_after)


# ----------------------------------------------------------------------------- ScienceWorld

SCIWORLD_INSTRUCTION = """\
You are an agent in ScienceWorld, a text simulation of a house and its surroundings (kitchen, \
bathroom, bedroom, living room, hallway, art studio, workshop, greenhouse, foundry, outside). You \
carry out elementary science tasks there: finding living or non-living things, growing plants, \
changing the state of matter, measuring temperatures, mixing chemicals and paints, building \
simple electrical circuits, comparing the life spans of animals, and more. Doors are already open.
Each turn, reply with a thought and then one action, in this form:
Thought: <your reasoning>
Action: <one action>
Actions (write object and room names as the observations write them):
- look around: describe the room you are in; look at OBJ, look in OBJ: examine a thing or its contents
- teleport to ROOM: go to any room at once; go to ROOM: walk through an open door to a next room
- open OBJ, close OBJ; activate OBJ, deactivate OBJ: switch a device such as a stove or a sink
- pick up OBJ: take it into your inventory; put down OBJ: drop it here
- move OBJ to CONTAINER: put a thing in or on a container
- pour OBJ in CONTAINER: empty a container into another; mix CONTAINER: stir what it holds
- focus on OBJ: name the thing the task is about; focusing on the wrong thing fails the task
- use OBJ on OBJ (e.g. a thermometer on a substance), read OBJ, eat OBJ, dunk OBJ in OBJ, flush OBJ
- connect OBJ to OBJ, disconnect OBJ: wire electrical parts (e.g. battery anode to wire terminal 1)
- wait: let ten time steps pass; wait1: let one pass
- inventory: list what you carry; task: repeat the task
When the simulator asks which object you meant, answer with the number of your choice."""

SCIWORLD_SPLITS = {"train": "train", "dev": "dev", "seen": "dev", "test": "test", "unseen": "test"}

# Episode limits per task, as in ETO (the last seven from later work that kept ETO's setup).
SCIWORLD_MAX_STEPS = {
    "boil": 100, "change-the-state-of-matter-of": 80, "freeze": 80, "melt": 80,
    "measure-melting-point-known-substance": 120, "measure-melting-point-unknown-substance": 120,
    "use-thermometer": 30, "power-component": 20, "power-component-renewable-vs-nonrenewable-energy": 30,
    "test-conductivity": 30, "test-conductivity-of-unknown-substances": 30,
    "find-animal": 15, "find-living-thing": 15, "find-non-living-thing": 15, "find-plant": 15,
    "grow-fruit": 60, "grow-plant": 30, "chemistry-mix": 60,
    "chemistry-mix-paint-secondary-color": 15, "chemistry-mix-paint-tertiary-color": 30,
    "lifespan-longest-lived": 10, "lifespan-shortest-lived": 10, "lifespan-longest-lived-then-shortest-lived": 12,
    "identify-life-stages-1": 30, "identify-life-stages-2": 30,
    "inclined-plane-determine-angle": 40, "inclined-plane-friction-named-surfaces": 40,
    "inclined-plane-friction-unnamed-surfaces": 40,
    "mendelian-genetics-known-plant": 50, "mendelian-genetics-unknown-plant": 50,
}

# The engine's answers to input it could not turn into an action, or refused to carry out.
SCIWORLD_INVALID = ("No known action matches that input.", "Unknown action.", "ERROR: Unknown response",
                    "ERROR: Value out of range", "Ambiguous request: Multiple different possible actions",
                    "It's not clear how to", "Its not clear how to", "You can't", "That can't", "Something can't",
                    "The door is not open.", "The door doesn't appear to go anywhere.")

# The engine's question when an action could mean several things: the next input must be a number.
SCIWORLD_QUESTION = "Ambiguous request"

# Per process, shared by all SciWorld objects: both cost an engine load to find out.
_SPLIT_VARIATIONS = {}  # task -> {"train": [...], "dev": [...], "test": [...]}
_GOLD_PATHS = {}  # (task, variation, simplification) -> the engine's gold actions

# The engine keeps its things in hash sets of objects that do not define hashCode, so rooms list
# them, worlds are built and gold paths chosen in the order of Java's identity hashes, which
# depend on the JVM thread serving the call and on what that thread hashed before. With
# hashCode=2 every identity hash is 1: hash sets keep insertion order, the same in every JVM.
DETERMINISTIC_JVM = "-XX:+UnlockExperimentalVMOptions -XX:hashCode=2"
NAVIGATION = ("open door to ", "go to ", "teleport to ")
# Steps after which the expert's plan still holds without a check in the engine: they only look,
# or move the agent (the plan starts from the room it is in). Other steps the plan did not
# contain are checked by playing the plan in a reloaded copy of the episode.
HARMLESS = ("look around", "look at ", "look in ", "examine ", "inventory", "task", "close door to ") + NAVIGATION
ROOM = re.compile(r"This (?:room|outside location) is called the (.+?)\.")


def norm_action(action):
    return " ".join(action.lower().split())


# Living things are named with their life stage ("adult cherry tree", "baby baby wolf", "blue jay
# egg"), and the stage changes as time passes in the simulation: a gold path names them as they were
# when it was recorded. The engine knows them by the name without the stage at any time.
LIFE_STAGES = {"egg", "hatchling", "baby", "juvenile", "adult", "seedling", "reproducing"}
NOT_NAMES = {"focus", "on", "pick", "up", "move", "to", "in", "into", "at", "containing", "and", "put", "down", "use"}


def without_life_stages(action):
    """The action with its living things named without their stage ("focus on adult cherry tree" ->
    "focus on cherry tree"). A stage word is a name's part only beside another word of the name:
    "move egg to red box" keeps its egg."""
    words = norm_action(action).split()
    return " ".join(w for i, w in enumerate(words) if w not in LIFE_STAGES or not (
        i + 1 < len(words) and words[i + 1] not in NOT_NAMES or i > 0 and words[i - 1] not in NOT_NAMES))


def same_action(a, b):
    return without_life_stages(a) == without_life_stages(b)


def is_navigation(action):
    return norm_action(action).startswith(NAVIGATION)


def is_harmless(action):
    return norm_action(action).startswith(HARMLESS)


def unordered(observation):
    """The parts of an observation, sorted: observations recorded before the engine ran with
    DETERMINISTIC_JVM list things in another order; compare those through this."""
    return sorted(re.split(r"[\n,]", observation))


def look_after_arriving_outside(path):
    """The lifespan gold paths focus on an animal right after arriving outside, never looking at
    which animals are there: a model trained on them guesses. A `look around` there fixes that."""
    out = []
    for i, action in enumerate(path):
        out.append(action)
        if action in ("go to outside", "teleport to outside") and path[i + 1:i + 2] != ["look around"]:
            out.append("look around")
    return out


class SciWorld:
    """The ScienceWorld engine (scienceworld 1.2.3, one JVM per object). Task ids are
    "task-name/variation". Options: tasks (task names; default all 30), simplification ("easy"),
    max_steps (default: the task's limit), look_outside (insert `look around` into the lifespan
    gold paths, see look_after_arriving_outside), timeout (seconds an engine call may take).
    The same task gives the same observations and gold path in every JVM, whatever it played before
    (see DETERMINISTIC_JVM and _generate_gold_path)."""
    name = "sciworld"
    instruction = SCIWORLD_INSTRUCTION

    @staticmethod
    def family(task_id):
        """The task type of an id "task/variation"."""
        return task_id.rsplit("/", 1)[0]

    def __init__(self, split, tasks=None, simplification="easy", max_steps=None, look_outside=True, timeout=300.0):
        if split not in SCIWORLD_SPLITS:
            raise ValueError(f"SciWorld split must be one of {sorted(SCIWORLD_SPLITS)}, got {split!r}")
        names = sorted(SCIWORLD_MAX_STEPS)
        tasks = tasks.split(",") if isinstance(tasks, str) else list(tasks or names)
        unknown = [t for t in tasks if t not in SCIWORLD_MAX_STEPS]
        if unknown:
            raise ValueError(f"SciWorld: unknown tasks {unknown}; the tasks are {names}")
        self.split, self.tasks, self.simplification = SCIWORLD_SPLITS[split], tasks, simplification
        self.teleport = "easy" in simplification or "teleportAction" in simplification
        self.look_outside, self._max_steps = look_outside, int(max_steps) if max_steps else None
        self.engine = self._start_engine(timeout)
        self._server = self.engine.server  # the raw simulator: its step skips the valid-action listing
        self._episode = None  # (task, variation) of the current episode

    @staticmethod
    def _start_engine(timeout):
        options = os.environ.get("JAVA_TOOL_OPTIONS", "-Xmx1g")  # 0.4-0.7 GB per JVM instead of 1-4 GB
        if "-XX:hashCode=" not in options:
            os.environ["JAVA_TOOL_OPTIONS"] = f"{options} {DETERMINISTIC_JVM}"
        from scienceworld import ScienceWorldEnv
        engine = ScienceWorldEnv("", envStepLimit=10**9)  # episode limits are ours
        # py4j waits forever on a hung JVM by default: bound every call (pooled sockets included).
        engine._gateway.gateway_parameters.read_timeout = timeout
        for connection in list(engine._gateway._gateway_client.deque):  # a copy: py4j's threads change it
            connection.socket.settimeout(timeout)
        java = engine._gateway.jvm.java.lang
        if java.System.identityHashCode(java.Object()) != 1:
            engine.close()
            raise RuntimeError(f"ScienceWorld's JVM runs without {DETERMINISTIC_JVM} (JAVA_TOOL_OPTIONS="
                               f"{os.environ['JAVA_TOOL_OPTIONS']!r}): its observations and gold paths would "
                               f"depend on the JVM's history. Remove the other -XX:hashCode setting.")
        return engine

    @property
    def max_steps(self):
        if self._max_steps:
            return self._max_steps
        if self._episode:
            return SCIWORLD_MAX_STEPS[self._episode[0]]
        return max(SCIWORLD_MAX_STEPS[t] for t in self.tasks)

    def _variations(self, task):
        """The split's variations of a task. Loads the task when not known yet: call it between
        episodes, not during one."""
        if task not in _SPLIT_VARIATIONS:
            self._load(task, 0, gold=False)
            self._episode = None
            s = self._server
            _SPLIT_VARIATIONS[task] = {"train": list(s.getVariationsTrain()), "dev": list(s.getVariationsDev()),
                                       "test": list(s.getVariationsTest())}
        return _SPLIT_VARIATIONS[task][self.split]

    def task_ids(self):
        return [f"{task}/{v}" for task in self.tasks for v in self._variations(task)]

    def _load(self, task, variation, gold):
        error = self._server.load(task, variation, self.simplification, gold)
        if error:
            raise RuntimeError(f"ScienceWorld could not load {task}/{variation}: {error}")

    def reset(self, task_id):
        task, _, variation = task_id.rpartition("/")
        if task not in SCIWORLD_MAX_STEPS or not variation.isdigit() or int(variation) not in self._variations(task):
            example = f"{self.tasks[0]}/{self._variations(self.tasks[0])[0]}"
            raise KeyError(f"SciWorld {self.split}: no task {task_id!r} (ids are 'task-name/variation' of this "
                           f"split, e.g. {example!r})")
        self._load(task, int(variation), gold=False)
        first = self._server.step("look around")  # what the engine's own reset shows
        self._episode, self._first, self._last = (task, int(variation)), first, first
        self._steps, self._done, self._won = [], False, False  # (action, observation) of each step
        self._before_steps = []  # the state before each step, for undo()
        self._route = self._rooms = None  # the expert's route (the gold path, adapted to the objects the
        # agent chose) and the room of each of its actions
        self._next = 0  # index in _route of the first action the episode has not done
        self._seen, self._on_gold_path, self._dead = 0, True, False  # steps followed; the expert's state
        return f"{self._server.getTaskDescription()}\n\n{first}"

    def step(self, action):
        """The raw simulator step, then score and completion: the observation, score and done of
        ScienceWorldEnv.step without its listing of all valid actions (~90 % of its time).
        reward = info["score"] = the score now, 0..1 (negative engine scores count as 0)."""
        if self._episode is None:
            raise RuntimeError("SciWorld: step() before reset()")
        self._before_steps.append(self._undo_state())
        observation = self._server.step(action)
        raw = int(round(100 * self._server.getScore()))
        done = bool(self._server.getCompleted()) or raw < 0  # the engine's own rule: < 0 is a failure
        self._steps.append((action, observation))
        self._done, self._won, self._last = done, done and raw >= 100, observation
        score = max(raw, 0) / 100
        info = {"score": score, "won": self._won, "invalid": observation.startswith(SCIWORLD_INVALID),
                "question": observation.startswith(SCIWORLD_QUESTION), "engine_score": raw}
        return observation, score, done, info

    def _undo_state(self):
        """What a step changes in the expert's state besides the steps (its route is replaced, never
        changed in place, so keeping the reference is enough)."""
        return self._route, self._rooms, self._next, self._seen, self._on_gold_path, self._dead

    def undo(self):
        """Takes the last step back: the task reloaded and the steps before it replayed (the engine
        is deterministic, so this is the state before it), the expert as it was then."""
        if not self._steps:
            raise RuntimeError("SciWorld: undo() without a step to take back")
        self._steps.pop()
        self._route, self._rooms, self._next, self._seen, self._on_gold_path, self._dead = self._before_steps.pop()
        self._last = self._steps[-1][1] if self._steps else self._first
        self._done = self._won = False  # an episode takes no step after its end
        self._load(*self._episode, gold=False)
        self._replay_episode()

    # The expert, from the current state: the gold path is its route; the episode's steps advance
    # it, and it rejoins the route by teleport from wherever the agent is.

    def expert_plan(self):
        """The shortest plan the expert knows from the current state: the rest of its route (the
        gold path from the first action the episode has not done; a done action advances it past
        moves and looks it skipped), each change of room made by one teleport. After a step the
        route did not contain (other than a look or a move), the plan is checked by playing it in a
        reloaded copy of the episode; if it fails, the route takes the object the agent chose
        instead of the gold path's (another thing to focus on, another pot) and is checked again.
        [] once won; None when the expert has no way to finish: the task failed, or neither check
        won. Without teleports (a simplification without them) the plan is the rest of the route."""
        if self._episode is None:
            raise RuntimeError("SciWorld: expert_plan() before reset()")
        if self._done:
            return [] if self._won else None
        self._follow()
        if self._dead:
            return None
        return self._answer_question(self._shortest_plan())

    def expert_action(self):
        """The expert's next action: the gold path's next one while the episode has done exactly
        the gold path's actions (so golden trajectories are the engine's gold paths, its harmless
        door openings included), else the first of expert_plan(). None once done or without a plan."""
        if self._episode is None:
            raise RuntimeError("SciWorld: expert_action() before reset()")
        if self._done:
            return None
        self._follow()
        if self._on_gold_path and self._next < len(self._route):
            return self._route[self._next]
        plan = self.expert_plan()
        return plan[0] if plan else None

    def expert_thought(self):
        return None  # the gold paths and the route planner give no reasons

    def _follow(self):
        """Advances the route over the steps taken since the expert last looked; checks the plan
        after steps it did not contain."""
        if self._route is None:
            self._route = self._gold_path()
            self._rooms = self._route_rooms(self._route)
        strays = []
        for action, observation in self._steps[self._seen:]:
            if (self._on_gold_path and self._next < len(self._route)
                    and same_action(action, self._route[self._next])):
                self._next += 1
                continue
            self._on_gold_path = False
            if observation.startswith(SCIWORLD_INVALID + (SCIWORLD_QUESTION,)):
                continue  # nothing happened (yet)
            reached = self._find_ahead(action, observation)
            if reached is not None:
                self._next = reached + 1
            elif not is_harmless(action):
                strays.append(action)
        self._seen = len(self._steps)
        if strays and self.teleport and not self._plan_wins(self._shortest_plan()):
            self._dead = not self._take_agents_choice(strays[-1])

    def _find_ahead(self, action, observation):
        """The index of `action` in the route at or after its next action with only moves and looks
        in between (another way to the same point), or None. A look counts in its own room only."""
        looked_at = ROOM.match(observation)
        for i in range(self._next, len(self._route)):
            if same_action(self._route[i], action) and (
                    looked_at is None or looked_at.group(1) == self._rooms[i]):
                return i
            if not (is_navigation(self._route[i]) or norm_action(self._route[i]) == "look around"):
                return None
        return None

    def _shortest_plan(self):
        """The rest of the route from here, its living things named without their stage (time has
        passed since the gold path was recorded)."""
        if not self.teleport:
            return [without_life_stages(a) for a in self._route[self._next:]]
        plan, here = [], self._room()
        for action, room in zip(self._route[self._next:], self._rooms[self._next:]):
            if is_navigation(action):
                continue
            if room != here:
                plan.append(f"teleport to {room}")
                here = room
            plan.append(without_life_stages(action))
        return plan

    def _room(self):
        look = self._server.freeActionLook()  # a look that takes no time in the simulation
        found = ROOM.search(look)
        if not found:
            raise RuntimeError(f"SciWorld {self._episode}: no room name in {look[:100]!r}")
        return found.group(1)

    def _route_rooms(self, route):
        """The room each action of the route is done in, from the start room and the route's moves."""
        rooms, room = [], ROOM.search(self._first).group(1)
        for action in route:
            rooms.append(room)
            if norm_action(action).startswith(("go to ", "teleport to ")):
                room = norm_action(action).split(" to ", 1)[1]
        return rooms

    def _answer_question(self, plan):
        """When the engine asked which thing the last action meant and one option is the plan's next
        action, the plan answers with its number (any other answer drops the question)."""
        if not (plan and self._last.startswith(SCIWORLD_QUESTION)):
            return plan
        options = {norm_action(text): number for number, text in
                   re.findall(r"^(\d+):\s*(.+?)(?: \([^()]*\))?\s*$", self._last, re.M)}
        return [options.get(norm_action(plan[0]), plan[0])] + plan[1:]

    def _plan_wins(self, plan):
        """Whether `plan` wins from the current state: played in the task reloaded and replayed to
        here, which is then reloaded and replayed again (the engine is seeded by the variation)."""
        self._load(*self._episode, gold=False)
        self._replay_episode()
        won = False
        for action in plan:
            self._server.step(action)
            raw = int(round(100 * self._server.getScore()))
            if self._server.getCompleted() or raw < 0:
                won = raw >= 100
                break
        self._load(*self._episode, gold=False)
        self._replay_episode()
        return won

    def _take_agents_choice(self, action):
        """After the agent focused on or picked up another thing than the route's next focus or pick
        up (another valid choice, or a mistake): the route with the agent's thing in place of the
        gold path's from there on (and the agent's thing's container in place of the gold one's),
        if that plan wins; returns whether it does."""
        verb = next((v for v in ("focus on ", "pick up ") if norm_action(action).startswith(v)), None)
        ahead = [i for i in range(self._next, len(self._route))
                 if not (is_navigation(self._route[i]) or norm_action(self._route[i]) == "look around")]
        if verb is None or not ahead or not norm_action(self._route[ahead[0]]).startswith(verb):
            return False
        i = ahead[0]
        named = re.match(r"You (?:focus on|move) the (.+?)(?: to the inventory)?\.$", self._last)
        chosen = named.group(1) if named else norm_action(action)[len(verb):]  # as the engine names it
        gold = norm_action(self._route[i])[len(verb):]
        swaps = {gold: chosen, without_life_stages(gold): chosen}  # "adult apple tree" is "apple tree" later
        later_pick = next((a for a in self._route[i + 1:] if norm_action(a).startswith("pick up ")), None)
        container = re.search(r"^\s*an? (.+?) \(containing [^\n]*\b" + re.escape(chosen) + r"\b",
                              self._server.freeActionLook(), re.M)
        if verb == "focus on " and later_pick and container:
            swaps[norm_action(later_pick)[len("pick up "):]] = container.group(1)
        pattern = re.compile("|".join(r"\b" + re.escape(k) + r"\b" for k in sorted(swaps, key=len, reverse=True)),
                             re.I)
        route = self._route[:i] + [action] + [pattern.sub(lambda m: swaps[m.group(0).lower()], a)
                                              for a in self._route[i + 1:]]
        kept = self._route, self._next
        self._route, self._next = route, i + 1
        if self._plan_wins(self._shortest_plan()):
            return True
        self._route, self._next = kept
        return False

    def _gold_path(self):
        key = (*self._episode, self.simplification)
        if key not in _GOLD_PATHS:
            _GOLD_PATHS[key] = self._generate_gold_path()
        if self.look_outside and self._episode[0].startswith("lifespan"):
            return look_after_arriving_outside(_GOLD_PATHS[key])
        return list(_GOLD_PATHS[key])

    def _generate_gold_path(self):
        """Reloads the task with its gold path (only asked for when an expert is needed: it costs
        ~0.2-10 s) and replays the episode so far. The engine caches the routes of its room
        searches by start room across loads (PathFinder.precomputedExhaustivePaths), which made a
        gold path depend on what the JVM generated before: emptied first, every gold path is
        generated as in a fresh JVM."""
        self.engine._gateway.jvm.scienceworld.goldagent.PathFinder.precomputedExhaustivePaths().clear()
        self._load(*self._episode, gold=True)
        gold = list(self._server.getGoldActionSequence())
        self._replay_episode()
        return gold

    def _replay_episode(self):
        """The episode's steps again, after a load: they must give what they gave the first time."""
        observation = self._server.step("look around")
        for action, _ in self._steps:
            observation = self._server.step(action)
        if observation != self._last:
            raise RuntimeError(f"SciWorld {self._episode}: replaying the episode gave {observation[:200]!r}, "
                               f"not {self._last[:200]!r}")

    def close(self):
        if self.engine is None:
            return
        engine, self.engine = self.engine, None
        gateway, process = engine._gateway, engine._gateway.java_process
        if process.poll() is None:  # alive: ask it to exit; a hung one gets killed
            try:
                engine.close()
            except Exception as e:
                log.debug("SciWorld: closing the engine: %s: %s", type(e).__name__, e)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        gateway.shutdown_callback_server()
        gateway._gateway_client.is_connected = False  # py4j's finalizers would call the dead JVM, logging errors
        engine.close = lambda: None  # ScienceWorldEnv.__del__ would shut it down again


# ----------------------------------------------------------------------------- ALFWorld

ALFWORLD_INSTRUCTION = """\
You are a household robot in a text world. The room has furniture and appliances (receptacles \
such as a drawer, a fridge or a countertop) with small objects in or on them. Do the task you are \
given.
Each turn, reply with a thought and then one command, in this form:
Thought: <your reasoning>
Action: <one command>
Commands, with names written exactly as the game writes them (e.g. "mug 1", "countertop 2"):
- go to X: walk up to receptacle X
- open X, close X: open or close receptacle X (drawers, cabinets, the fridge, the microwave)
- take X from Y: pick up object X from receptacle Y; you can carry one object at a time
- move X to Y: put the object X you carry in or on receptacle Y
- heat X with Y, cool X with Y, clean X with Y: heat the object X you carry with a microwave Y, \
cool it with a fridge Y, wash it in a sinkbasin Y
- slice X with Y: slice object X with the knife Y you carry
- use X: switch lamp X on or off
- examine X: look closely at an object or receptacle
- look: describe where you are; inventory: say what you carry; help: list the commands
You must go to a receptacle before you act on it or on what it holds. "Nothing happens." means \
the command was not possible."""

ALFWORLD_SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alfworld_data")
ALFWORLD_BANNER = "-= Welcome to TextWorld, ALFRED! =-"
ALFWORLD_INVALID = "Nothing happens."
ALFWORLD_SPLIT_ALIASES = {"seen": "valid_seen", "unseen": "valid_unseen"}  # other splits: the folder's name
_ENGINE_LOCK = threading.Lock()


@contextlib.contextmanager
def alfworld_engine():
    """One engine call at a time across threads: textworld shares one grammar parser between games
    (concurrent steps fail), and fast-downward's PDDL translator, run on every load and reset,
    keeps global options and overwrites sys.argv (put back here)."""
    with _ENGINE_LOCK:
        argv = sys.argv[:]
        try:
            yield
        finally:
            sys.argv = argv


# Games whose parsed logic and translated PDDL are kept (about 2.4 MB each): the evaluation games of a
# pipeline, played again by every agent, fit.
ALFWORLD_MEMO_GAMES = 256


@lru_cache(maxsize=None)
def memoize_alfworld_loading():
    """textworld loads a game by parsing its grammar and translating its PDDL with fast-downward, twice
    at load and twice again at reset: about 2 s a reset on the benchmark's scenes, where the game's own
    steps take milliseconds. Both are pure functions of the game file's text, so they are memoized once
    per process: a game's reset translates once, and playing it again (undo's replay, the same games
    evaluated for each agent) takes 0.2 s instead of 2 s."""
    import fast_downward
    from textworld.envs.pddl import logic
    fast_downward.pddl2sas = lru_cache(maxsize=2 * ALFWORLD_MEMO_GAMES)(fast_downward.pddl2sas)
    logic.GameLogic = lru_cache(maxsize=ALFWORLD_MEMO_GAMES)(logic.GameLogic)


def default_alfworld_data():
    """$ALFWORLD_DATA, else the shipped games. Importing alfworld sets an unset $ALFWORLD_DATA to its
    download folder ~/.cache/alfworld: that value counts as unset while it holds no games."""
    path = os.environ.get("ALFWORLD_DATA")
    if path and (path != os.path.expanduser("~/.cache/alfworld") or os.path.isdir(os.path.join(path, "json_2.1.1"))):
        return path
    return ALFWORLD_SHIPPED


@lru_cache(maxsize=None)
def alfworld_games(data_dir, split):
    """{task id: game file} of a split, the games ALFWorld itself would play: solvable ones, no
    movable-receptacle or sliced variants (as their folder names say). Task id = game folder relative to
    json_2.1.1. A game is its game.tw-pddl alone, as the release's json_2.1.2_tw-pddl archive has it;
    traj_data.json beside it (ALFRED's annotations) is not read."""
    root = os.path.join(data_dir, "json_2.1.1")
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        found = sorted(os.listdir(root)) if os.path.isdir(root) else []
        raise FileNotFoundError(f"ALFWorld split {split!r}: no folder {split_dir} (splits there: {found})")
    games = {}
    for folder, _, files in os.walk(split_dir):
        if "game.tw-pddl" not in files or "movable" in folder or "Sliced" in folder:
            continue
        path = os.path.join(folder, "game.tw-pddl")
        with open(path) as f:
            if json.load(f).get("solvable"):
                games[os.path.relpath(folder, root)] = path
    if not games:
        raise FileNotFoundError(f"ALFWorld split {split!r}: no solvable game under {split_dir}")
    return dict(sorted(games.items()))


class ReplayUndo:
    """undo() for an engine without snapshots whose episodes replay exactly: the task is reset and
    the steps before the last one are played again. The class keeps its task in self._task_id and
    its actions in self._actions (reset() empties them, step() appends)."""

    def undo(self):
        if not self._actions:
            raise RuntimeError(f"{self.name}: undo() without a step to take back")
        actions = self._actions[:-1]
        self.reset(self._task_id)
        for action in actions:
            self.step(action)


# ----------------------------------------------------------------------------- ALFWorld's searching expert

ALFWORLD_EXPERTS = ("search", "planner")  # the first is the default
ALFWORLD_PRIOR = os.path.join(ALFWORLD_SHIPPED, "search_prior.json")  # written by alfworld_games.py --prior
ALFWORLD_TOOLS = {"clean": "sinkbasin", "heat": "microwave", "cool": "fridge"}  # the receptacle each change needs
ALFWORLD_CHANGE = {"pick_clean_then_place_in_recep": "clean", "pick_heat_then_place_in_recep": "heat",
                   "pick_cool_then_place_in_recep": "cool"}
ALFWORLD_BASINS = ("sinkbasin", "bathtubbasin", "garbagecan")  # things are in these, not on them
SEARCH_LIMIT = 200  # steps of a simulated search before it counts as lost
SHOWN_PLACES = 3  # places named in a thought


@dataclass(frozen=True)
class AlfredTask:
    """What an ALFWorld game asks, from its folder's name "type-Object-Mrecep-Parent-scene": kind (the task
    type), obj (the object's type, "mug"), target (the receptacle type to put it in, or for
    look_at_obj_in_light the lamp's type), as the game names them."""
    kind: str
    obj: str
    target: str

    @classmethod
    def of(cls, task_id):
        kind, obj, _, target, _ = task_id.split("/")[-2].split("-")
        return cls(kind, obj.lower(), target.lower())


def kind_of(name):
    """"countertop 2" -> "countertop"."""
    return name.rsplit(" ", 1)[0]


def by_number(name):
    kind, _, number = name.rpartition(" ")
    return kind, int(number) if number.isdigit() else 0


@dataclass
class Room:
    """An ALFWorld room as the engine holds it, named as the game writes things ("mug 1"): read from the
    engine's facts, or played forward by the searching expert's simulation (apply). Receptacles: their
    location, which open, which are open, what they hold."""
    location: dict  # receptacle -> its location
    openable: set
    opened: set
    contents: dict  # receptacle -> [objects]
    at: str | None  # the agent's location
    holding: str | None
    changed: dict  # "clean"/"heat"/"cool" -> objects made so
    toggled: set  # lamps switched on

    @classmethod
    def of(cls, state):
        """The room in a textworld state of ALFWorld's engine (its facts, demangled names)."""
        names = {k: info.name for k, info in state["_entity_infos"].items()}
        room = cls({}, set(), set(), {}, None, None, {k: set() for k in ALFWORLD_TOOLS}, set())
        fact = {"isclean": room.changed["clean"], "ishot": room.changed["heat"], "iscool": room.changed["cool"],
                "istoggled": room.toggled, "openable": room.openable, "opened": room.opened}
        for f in state["_facts"]:
            args = [names.get(v.name, v.name) for v in f.arguments]
            if f.name == "receptacleatlocation":
                room.location[args[0]] = args[1]
                room.contents.setdefault(args[0], [])
            elif f.name == "inreceptacle":
                room.contents.setdefault(args[1], []).append(args[0])
            elif f.name == "atlocation":
                room.at = args[1]
            elif f.name == "holds":
                room.holding = args[1]
            elif f.name in fact:
                fact[f.name].add(args[0])
        for objects in room.contents.values():
            objects.sort(key=by_number)
        return room

    def copy(self):
        """A copy to play forward; the furniture (location, openable) is shared: no command changes it."""
        return Room(self.location, self.openable, set(self.opened), {r: list(o) for r, o in self.contents.items()},
                    self.at, self.holding, {k: set(v) for k, v in self.changed.items()}, set(self.toggled))

    def where(self, receptacle):
        """"in the fridge 1", "on the countertop 1"."""
        inside = receptacle in self.openable or kind_of(receptacle) in ALFWORLD_BASINS
        return f"{'in' if inside else 'on'} the {receptacle}"

    def shows(self, receptacle):
        """Whether one standing at the receptacle sees what it holds."""
        return receptacle not in self.openable or receptacle in self.opened

    def apply(self, action):
        """The effect of one of the searching expert's commands (the engine's rules for them)."""
        verb, _, rest = action.partition(" ")
        if verb == "go":
            self.at = self.location[rest.removeprefix("to ")]
        elif verb == "open":
            self.opened.add(rest)
        elif verb == "take":
            obj, receptacle = rest.split(" from ")
            self.contents[receptacle].remove(obj)
            self.holding = obj
        elif verb == "move":
            obj, receptacle = rest.split(" to ")
            self.contents[receptacle] = sorted(self.contents[receptacle] + [obj], key=by_number)
            self.holding = None
        elif verb in ALFWORLD_TOOLS:
            obj = rest.split(" with ")[0]
            self.changed[verb].add(obj)
            if verb in ("heat", "cool"):  # hot and cold undo each other
                self.changed["cool" if verb == "heat" else "heat"].discard(obj)
        elif verb == "use":
            self.toggled.add(rest)
        elif verb != "examine":
            raise ValueError(f"the searching expert's simulation has no rule for {action!r}")

    def won(self, task):
        """The game's goal, for the task types of ALFWorld's benchmark."""
        if task.kind == "look_at_obj_in_light":
            here = [o for r, at in self.location.items() if at == self.at for o in self.contents[r]]
            return (self.holding is not None and kind_of(self.holding) == task.obj
                    and any(kind_of(o) == task.target and o in self.toggled for o in here))
        change = ALFWORLD_CHANGE.get(task.kind)
        needed = 2 if task.kind == "pick_two_obj_and_place" else 1
        return any(kind_of(r) == task.target and needed <= sum(
            kind_of(o) == task.obj and (change is None or o in self.changed[change]) for o in objects)
            for r, objects in self.contents.items())


@dataclass
class SearchKnowledge:
    """What the agent knows of a room: the receptacles the room's first observation lists, where each
    stands and which open (the room's furniture, the same wherever the objects are), where it is, what it
    holds and has changed, and what it has seen inside the receptacles it has looked into (seen, in the
    order first seen). `facing`: the receptacle it last went to, opened or examined."""
    room: Room  # the furniture and the agent's state, without the contents: those are in `seen`
    seen: dict = field(default_factory=dict)  # receptacle -> [objects], as last seen
    facing: str | None = None

    @classmethod
    def start(cls, room):
        known = cls(room)
        known.observe(room)
        return known

    def observe(self, room, action=None, valid=False):
        """After a step (valid: the engine took it; no action: the start): the agent's state from the
        room, and what it now sees. The room's contents are read here only, for the receptacle faced."""
        verb, _, rest = norm_action(action or "").partition(" ")
        if valid and verb in ("go", "open", "examine") and rest.removeprefix("to ") in room.location:
            self.facing = rest.removeprefix("to ")
        if self.facing and room.at == room.location[self.facing] and room.shows(self.facing):
            self.seen[self.facing] = list(room.contents[self.facing])
        self.room = replace(room, contents=None)

    def copy(self):
        return SearchKnowledge(self.room, {r: list(o) for r, o in self.seen.items()}, self.facing)

    def here(self, receptacle):
        return self.room.at == self.room.location[receptacle]


def places(names):
    """"desk 1, dresser 1, shelf 2 and 4 more"."""
    shown = ", ".join(names[:SHOWN_PLACES])
    more = len(names) - SHOWN_PLACES
    return shown if more <= 0 else f"{shown} and {more} more"


@lru_cache(maxsize=None)
def search_prior():
    with open(ALFWORLD_PRIOR) as f:
        return json.load(f)


class SearchingExpert:
    """ALFWorld's expert that searches as the agent must: it acts only on what the agent has seen
    (SearchKnowledge), never on where the objects really are. To find an object it checks the
    receptacles of the room, likeliest first by a prior from the train split's games
    (alfworld_data/search_prior.json: the share of receptacles of each type that hold such an object),
    each once, opening closed ones, and takes the first such object it has seen; then it does the
    rest of the task (the sinkbasin, microwave or fridge, the lamp, the target receptacle) as the
    planner would. step() gives its next thought and command; plan() plays it forward on a copy of
    the real room to the win (what the judge's plan lengths count)."""

    def __init__(self, task, prior):
        self.task, self.prior = task, prior  # prior: search_prior()

    def search_order(self, known, thing):
        """The receptacles not yet looked into, likeliest to hold a `thing` first."""
        likely = self.prior.get(thing, {})
        left = [r for r in known.room.location if r not in known.seen]
        return sorted(left, key=lambda r: (-likely.get(kind_of(r), 0.0), by_number(r)))

    def first_seen(self, known, thing, skip=()):
        """(object, receptacle) of the first `thing` seen that is still there, or None."""
        return next(((o, r) for r, objects in known.seen.items() if r not in skip
                     for o in objects if kind_of(o) == thing), None)

    def search(self, known, thing, why):
        """The next command looking for a `thing`: go to the likeliest receptacle not yet looked into
        (examine one where the agent already stands), open it if closed."""
        order = self.search_order(known, thing)
        if not order:
            return None
        place, room = order[0], known.room
        if known.here(place) and place in room.openable and place not in room.opened:
            return f"The {place} is closed. I open it to look for {with_article(thing)} inside.", f"open {place}"
        missed = known.facing if known.facing in known.seen else None
        said = f"There is no {thing} {room.where(missed)}. " if missed else ""
        rest = f" After it: {places(order[1:])}." if len(order) > 1 else ""
        thought = f"{said}{why}: I check the {place} next.{rest}"
        return thought, (f"examine {place}" if known.here(place) else f"go to {place}")

    def target(self, known):
        """Where the object goes: a receptacle of the target type that already holds one (the second
        object goes beside the first), else one the agent stands at, else the first by number."""
        room, task = known.room, self.task
        targets = sorted((r for r in room.location if kind_of(r) == task.target), key=by_number)
        holding = [r for r in targets if any(kind_of(o) == task.obj for o in known.seen.get(r, ()))]
        return (holding or [r for r in targets if known.here(r)] or targets or [None])[0]

    def go_and(self, known, place, then, thought, reason):
        """`then` at `place`: first go there (or open it) when needed."""
        room = known.room
        if not known.here(place):
            return f"{reason} I go to the {place}.", f"go to {place}"
        if place in room.openable and place not in room.opened and then.startswith(("take", "move")):
            return f"The {place} is closed. I open it.", f"open {place}"
        return thought, then

    def step(self, known):
        """(thought, command) of the expert from what the agent knows; None when it has nothing to do."""
        task, room = self.task, known.room
        held, obj = room.holding, task.obj
        if held is not None and kind_of(held) != obj:  # not what the task needs: put it back here
            place = known.facing or next(iter(room.location))
            return self.go_and(known, place, f"move {held} to {place}",
                               f"The {held} is not what the task needs. I put it down {room.where(place)}.",
                               f"The {held} is not what the task needs.")
        if held is None:
            target = self.target(known) if task.kind == "pick_two_obj_and_place" else None
            found = self.first_seen(known, obj, skip={target})
            if found is None:
                second = "another" if target and self.first_seen(known, obj) else "a"
                return self.search(known, obj, f"I need {second} {obj}")
            o, place = found
            return self.go_and(known, place, f"take {o} from {place}", f"I see the {o} {room.where(place)}. I take it.",
                               f"I saw the {o} {room.where(place)}.")
        change = ALFWORLD_CHANGE.get(task.kind)
        if change and held not in room.changed[change]:
            tool = min((r for r in room.location if kind_of(r) == ALFWORLD_TOOLS[change]), key=by_number)
            return self.go_and(known, tool, f"{change} {held} with {tool}", f"I {change} the {held} with the {tool}.",
                               f"I have the {held}; to {change} it I need the {tool}.")
        if task.kind == "look_at_obj_in_light":
            found = self.first_seen(known, task.target)
            if found is None:
                return self.search(known, task.target, f"I have the {held}; now I need a {task.target}")
            lamp, place = found
            return self.go_and(known, place, f"use {lamp}", f"I switch on the {lamp} to look at the {held} under it.",
                               f"I have the {held}, and I saw the {lamp} {room.where(place)}.")
        place = self.target(known)
        return self.go_and(known, place, f"move {held} to {place}", f"I put the {held} {room.where(place)}.",
                           f"I have the {held}; it goes {room.where(place)}.")

    def plan(self, room, known):
        """The expert's commands from here to the win, played on a copy of the room; [] once won, None
        when it gets stuck or does not win within SEARCH_LIMIT steps."""
        room, known, actions = room.copy(), known.copy(), []  # the copies are played, the env's are not
        while not room.won(self.task):
            move = self.step(known) if len(actions) < SEARCH_LIMIT else None
            if move is None:
                return None
            actions.append(move[1])
            room.apply(move[1])
            known.observe(room, move[1], valid=True)
        return actions


def with_article(thing):
    return ("an " if thing[:1] in "aeiou" else "a ") + thing


class AlfWorldEnv(ReplayUndo):
    """ALFWorld's text engine. Splits: the folders of json_2.1.1 (train, valid_seen or seen,
    valid_unseen or unseen). Options: data_dir (holds json_2.1.1/; default $ALFWORLD_DATA, else
    the games shipped in alfworld_data/), max_steps (40, ETO's limit), expert: "planner" (the PDDL
    planner, which knows where everything is and goes straight to it) or "search" (SearchingExpert:
    it looks for things as the agent must)."""
    name = "alfworld"

    @staticmethod
    def family(task_id):
        """The task type of an id "split/type-object-...-scene/trial_N"."""
        return task_id.split("/")[-2].split("-")[0]
    instruction = ALFWORLD_INSTRUCTION

    def __init__(self, split, data_dir=None, max_steps=40, expert=ALFWORLD_EXPERTS[0]):
        if expert not in ALFWORLD_EXPERTS:
            raise ValueError(f"ALFWorld expert must be one of {ALFWORLD_EXPERTS}, got {expert!r}")
        self.split, self.max_steps, self.expert = ALFWORLD_SPLIT_ALIASES.get(split, split), int(max_steps), expert
        self.data_dir = os.path.abspath(data_dir or default_alfworld_data())
        self._games = alfworld_games(self.data_dir, self.split)
        self._tw = None  # one textworld env, loaded with each new game (each env loads its own planner library)
        self._state = self._plan = None
        self._searcher = self._known = self._room = None  # the searching expert, what the agent knows, the room

    def task_ids(self):
        return list(self._games)

    def reset(self, task_id):
        if task_id not in self._games:
            example = next(iter(self._games))
            raise KeyError(f"ALFWorld {self.split}: no game {task_id!r} under {self.data_dir} (e.g. {example!r})")
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        path, self._state, self._room = self._games[task_id], None, None
        self._task_id, self._actions = task_id, []
        memoize_alfworld_loading()
        with alfworld_engine():
            if self._tw is None:
                self._tw = textworld.start(path, textworld.EnvInfos(won=True), wrappers=[AlfredDemangler()])
            else:
                self._tw.load(path)
            self._state = self._tw.reset()
        with open(path) as f:  # the game's walkthrough: a winning plan from the start, so none is searched for
            self._plan = json.load(f).get("walkthrough") or None
        if self.expert == "search":
            self._searcher = SearchingExpert(AlfredTask.of(task_id), search_prior())
            self._known = SearchKnowledge.start(self.room())
        return self._state.feedback.removeprefix(ALFWORLD_BANNER).strip()

    def step(self, action):
        if self._state is None:
            raise RuntimeError("ALFWorld: step() before reset()")
        before, revisit = self._state, self.revisits(action)
        with alfworld_engine():
            self._state, _, _ = self._tw.step(action)
        self._actions.append(action)
        obs, won = self._state.feedback, bool(self._state["won"])
        invalid = obs == ALFWORLD_INVALID
        self._room = None
        if self._known is not None:
            self._known.observe(self.room(), action, valid=not invalid)
        # The game is deterministic, so the plan is asked of the planner again only after a step off
        # it: the plan's next action done, the rest of it still wins; a step that changed no fact of
        # the game (a command it rejected, "Nothing happens.") leaves the whole plan valid.
        if self._plan and not invalid and norm_action(action) == norm_action(self._plan[0]):
            self._plan = self._plan[1:]
        elif self._plan is not None and set(self._state["_facts"]) != set(before["_facts"]):
            self._plan = None
        return obs, float(won), won, {"score": float(won), "won": won, "invalid": invalid, "revisit": revisit}

    def room(self):
        """The room in the engine's current state (read once per state)."""
        if self._room is None:
            self._room = Room.of(self._state)
        return self._room

    def revisits(self, action):
        """Whether `action` goes back to, opens or examines a receptacle the agent has already looked
        into, where the searching expert would not: a wasted move (the judge is told it repeats a step)."""
        if self._known is None or self._state is None or self._state["won"]:
            return False
        verb, _, rest = norm_action(action).partition(" ")
        move = self._searcher.step(self._known)
        return (verb in ("go", "open", "examine") and rest.removeprefix("to ") in self._known.seen
                and not (move and norm_action(move[1]) == norm_action(action)))

    def expert_plan(self):
        """The expert's plan from the current state: [] once won, None if it finds none. The searching
        expert's: SearchingExpert.plan. The planner's: see planner_plan."""
        if self._state is None:
            raise RuntimeError("ALFWorld: expert_plan() before reset()")
        if self._state["won"]:
            return []
        if self._searcher is not None:
            return self._searcher.plan(self.room(), self._known)
        return self.planner_plan()

    def planner_plan(self):
        """The PDDL planner's plan from the current state: [] once won, None if it finds none.
        It is the plan AlfredExpert(PLANNER) reads from textworld's policy_commands (that wrapper is
        what alfworld 0.4.2's AlfredTWEnv fails to install), but planned only when asked and only
        after a step off the last plan (from the start, the game file's walkthrough is the plan):
        textworld would replan on every step (~1 ms on the shipped scenes, up to seconds on the
        benchmark's)."""
        if self._plan is None:
            game = self._tw.unwrapped
            with alfworld_engine():
                self._plan = game._pddl_state.replan(game._entity_infos)
        return list(self._plan) or None

    def expert_action(self):
        """The expert's next command from the current state; None once won (or if no plan)."""
        if self._searcher is not None:
            move = self.expert_move()
            return move and move[1]
        plan = self.expert_plan()
        return plan[0] if plan else None

    def expert_thought(self):
        """Why the expert does its next command: the searching expert says (what it looks for, where it
        has not looked yet); the planner does not (None)."""
        move = self.expert_move() if self._searcher is not None else None
        return move and move[0]

    def expert_move(self):
        if self._state is None:
            raise RuntimeError("ALFWorld: expert_action() before reset()")
        return None if self._state["won"] else self._searcher.step(self._known)

    def close(self):
        if self._tw is not None:
            self._tw.close()
            self._tw = self._state = self._plan = self._room = None


# ----------------------------------------------------------------------------- WebShop

WEBSHOP_INSTRUCTION = """\
You are shopping in a web store for a customer. The first page gives the customer's request: find \
a product that fits it (its features, the options asked for such as size or colour, and the price \
limit) and buy it.
Each turn, reply with a thought and then one action, in this form:
Thought: <your reasoning>
Action: <one action>
Actions:
- search[keywords]: search the store; only on a page with a search box
- click[value]: click a button or link shown on the page: a product id, an option value, \
"Next >", "< Prev", "Back to Search", "Description", "Features", "Reviews" or "Buy Now"
The parts of a page are separated by [SEP]. On a product page, click the options the request \
asks for before "Buy Now"; buying ends the episode."""

# WebShop's own split of its 12,087 instructions (session ids): test 0-499, valid 500-1499.
WEBSHOP_SPLITS = {"test": (0, 500), "valid": (500, 1500), "train": (1500, 12087)}
WEBSHOP_ACTION = re.compile(r"(search|click)\[(.+)\]", re.S)
SERVER_ERROR = re.compile(r"Traceback \(most recent call last\)|^\s*(error|exception)\b", re.I)


def parse_sessions(text):
    """'start:stop' -> (start, stop)."""
    try:
        start, stop = map(int, text.split(":"))
    except ValueError:
        raise ValueError(f"WebShop sessions must be 'start:stop' (e.g. '0:200'), got {text!r}") from None
    return start, stop


class EnvServerError(RuntimeError):
    """An environment server failed: unreachable, too slow, an HTTP error or an error in its reply."""


class WebShopEnv(ReplayUndo):
    """Client of a WebShop environment server (AgentGym's protocol). Options: url (default
    $WEBSHOP_URL, else http://127.0.0.1:36001), timeout (seconds per request), max_steps (10, ETO's
    limit), sessions ("start:stop", the session ids to use instead of the split's)."""
    name = "webshop"

    @staticmethod
    def family(task_id):
        """WebShop's goals are of one kind."""
        return "webshop"
    instruction = WEBSHOP_INSTRUCTION

    def __init__(self, split, url=None, timeout=60.0, max_steps=10, sessions=None):
        if sessions is None and split not in WEBSHOP_SPLITS:
            raise ValueError(f"WebShop split must be one of {sorted(WEBSHOP_SPLITS)} "
                             f"(or give sessions='start:stop'), got {split!r}")
        self.split, self.max_steps, self.timeout = split, int(max_steps), float(timeout)
        self.url = (url or os.environ.get("WEBSHOP_URL") or "http://127.0.0.1:36001").rstrip("/")
        self._sessions = parse_sessions(sessions) if sessions else WEBSHOP_SPLITS[split]
        self._http = requests.Session()
        self._env_idx = None
        self._check_health()

    def task_ids(self):
        return [str(i) for i in range(*self._sessions)]

    def _call(self, method, path, **kwargs):
        """One request; any failure raises an EnvServerError saying what happened and where."""
        where = f"WebShop server {self.url}{path}"
        try:
            r = self._http.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout as e:
            raise EnvServerError(f"{where} did not answer within {self.timeout:g} s (timeout)") from e
        except requests.ConnectionError as e:
            raise EnvServerError(f"{where} is not reachable ({e.__class__.__name__})") from e
        if r.status_code != 200:
            raise EnvServerError(f"{where} answered HTTP {r.status_code}: {r.text[:500]}")
        try:
            body = r.json()
        except ValueError as e:
            raise EnvServerError(f"{where} answered something that is not JSON: {r.text[:200]!r}") from e
        if isinstance(body, dict) and body.get("error"):  # some servers report failures with HTTP 200
            raise EnvServerError(f"{where} returned an error (with HTTP 200): {str(body['error'])[:500]}")
        return body

    def _check_health(self):
        try:
            self._call("GET", "/")
        except EnvServerError as e:
            raise EnvServerError(f"WebShop health check failed: {e}. Start a WebShop environment server "
                                 "there (e.g. AgentGym's `webshop --port 36001`) or point WEBSHOP_URL or the "
                                 "url option at one.") from e

    def _expect(self, path, ok, what, got):
        if not ok:
            raise EnvServerError(f"WebShop server {self.url}{path}: expected {what}, got {str(got)[:200]}")

    def _page(self, path, text):
        """A page the server sent; servers that catch an exception tend to send it as the page."""
        if not isinstance(text, str) or SERVER_ERROR.search(text):
            raise EnvServerError(f"WebShop server {self.url}{path} returned an error as the page: {str(text)[:500]}")
        return text

    def reset(self, task_id):
        if not str(task_id).isdigit():
            raise ValueError(f"WebShop task ids are session numbers, got {task_id!r}")
        session = int(task_id)
        self.close()  # one server-side environment per episode: servers keep every one alive otherwise
        env_idx = self._call("POST", "/create")
        self._expect("/create", isinstance(env_idx, int), "an env_idx (int)", env_idx)
        self._env_idx, self._task_id, self._actions = env_idx, task_id, []
        reply = self._call("POST", "/reset", json={"env_idx": env_idx, "session_id": session})
        self._expect("/reset", isinstance(reply, list) and reply, "[observation, info]", reply)
        return self._page("/reset", reply[0])

    def step(self, action):
        if self._env_idx is None:
            raise RuntimeError("WebShop: step() before reset()")
        parsed = WEBSHOP_ACTION.fullmatch(action.strip())
        self._actions.append(action)
        if parsed is None:  # not sent: servers answer malformed actions unpredictably
            page = self._page("/observation", self._call("GET", "/observation", params={"env_idx": self._env_idx}))
            return "Invalid action.\n\n" + page, 0.0, False, {"score": 0.0, "won": False, "invalid": True}
        valid = self._available(*parsed.groups())
        reply = self._call("POST", "/step", json={"env_idx": self._env_idx, "action": action.strip()})
        self._expect("/step", isinstance(reply, dict) and {"state", "reward", "done"} <= set(reply),
                     "state, reward, done", reply)
        reward, done = float(reply["reward"] or 0.0), bool(reply["done"])
        info = {"score": reward, "won": done and reward >= 1.0, "invalid": not valid}
        return self._page("/step", reply["state"]), reward, done, info

    def _available(self, kind, arg):
        """Whether the page offers this action (WebShop matches click values without case)."""
        actions = self._call("GET", "/available_actions", params={"env_idx": self._env_idx})
        self._expect("/available_actions", isinstance(actions, dict) and "clickables" in actions, "clickables", actions)
        if kind == "search":
            return bool(actions.get("has_search_bar"))
        return arg.strip().lower() in {str(c).lower() for c in actions["clickables"]}

    def expert_plan(self):
        return None  # the protocol offers no expert

    def expert_action(self):
        return None

    def expert_thought(self):
        return None

    def close(self):
        """Frees the server-side environment of the current episode."""
        if self._env_idx is not None:
            env_idx, self._env_idx = self._env_idx, None
            reply = self._call("POST", "/close", json={"env_idx": env_idx})
            if not (isinstance(reply, dict) and reply.get("closed")):
                log.warning("WebShop server %s did not close environment %s: %s", self.url, env_idx, reply)


ENVS = {"sciworld": SciWorld, "alfworld": AlfWorldEnv, "webshop": WebShopEnv}  # name -> class(split, **options)


def task_family(env_name, task_id):
    """The task type a task id belongs to (for drawing tasks evenly across types)."""
    return ENVS[env_name].family(task_id)


def make_env(name, split, **options):
    if name not in ENVS:
        raise ValueError(f"unknown environment {name!r}; the environments are {sorted(ENVS)}")
    return ENVS[name](split, **options)


# ----------------------------------------------------------------------------- which tasks to play

EVAL_SET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval_sets")


def eto_tasks(env_name, split):
    """ETO's evaluation lists (eval_sets/eto/, from ETO's repository), which the agent-tuning
    literature reports on: SciWorld seen = 194 dev and unseen = 211 test variations (train: the
    1,483 of its golden data), ALFWorld's 134 valid_unseen games (valid_seen: every game of the
    split), WebShop's 200 test sessions. ETO's SciWorld names drop to scienceworld's by removing
    the "task-N-" prefix and the parentheses."""
    folder = os.path.join(EVAL_SET_DIR, "eto")
    if env_name == "sciworld":
        split = {"seen": "dev", "unseen": "test"}.get(split, split)
        with open(os.path.join(folder, f"sciworld_{split}_indices.json")) as f:
            pairs = json.load(f)
        return [f"{re.sub(r'^task-[0-9]+[a-z]?-', '', name).replace('(', '').replace(')', '')}/{variation}"
                for name, variation in pairs]
    if env_name == "alfworld" and split in ("valid_unseen", "unseen"):
        with open(os.path.join(folder, "alfworld_gamefile_id.txt")) as f:
            return ["valid_unseen/" + line for line in f.read().split()]
    if env_name == "alfworld" and split in ("valid_seen", "seen"):
        return None
    if env_name == "webshop" and split == "test":
        with open(os.path.join(folder, "webshop_test_indices.json")) as f:
            return [str(session) for session in json.load(f)]
    raise ValueError(f"--eval-set eto has no list for {env_name} split {split!r}")


EVAL_SETS = {"eto": eto_tasks}  # name: (env, split) -> task ids, or None for the whole split


def listed_tasks(env_name, split, task_file=None, eval_set=None):
    """The task ids that a task file (one a line) or an evaluation set name, in their order; None
    when neither is given."""
    if task_file:
        with open(task_file) as f:
            return [line.strip() for line in f.read().splitlines() if line.strip()]
    if eval_set:
        return EVAL_SETS[eval_set](env_name, split)
    return None


def select_tasks(env_name, task_ids, n=None, listed=None):
    """The tasks to run, the first n taken round-robin across task families so that a small n still
    covers every family: of `listed` if given (each must be one of the split's task_ids; WebShop's
    are the server's session numbers, any of which can be asked for), else of the split."""
    if listed is not None:
        split_ids = set(task_ids)
        unknown = [t for t in listed if t not in split_ids] if env_name != "webshop" else []
        if unknown:
            raise ValueError(f"{len(unknown)} listed task ids are not in this split, e.g. {unknown[:3]}")
        task_ids = listed
    families = {}
    for task_id in task_ids:
        families.setdefault(task_family(env_name, task_id), []).append(task_id)
    interleaved = [t for group in itertools.zip_longest(*families.values()) for t in group if t is not None]
    return interleaved[:n] if n else interleaved


# ----------------------------------------------------------------------------- metrics

def family_counts(trajectories):
    """{family: {"episodes", "success"}} over trajectories of any environments, families sorted:
    e.g. how many reflected episodes of each task type were kept for training (the successful ones)."""
    counts = defaultdict(lambda: {"episodes": 0, "success": 0})
    for t in trajectories:
        family = counts[ENVS[t["env"]].family(t["task"])]
        family["episodes"] += 1
        family["success"] += bool(t["success"])
    return dict(sorted(counts.items()))


METRICS = {"alfworld": "success"}  # the rest: mean reward (sciworld: best score reached), x100


def summarize(trajectories):
    """{"env/split": {"metric", "episodes", "success_rate", "mean_reward", "mean_steps"}}: metric is
    ALFWorld's success rate, else the mean reward, both x100 like the literature reports them."""
    groups = defaultdict(list)
    for t in trajectories:
        groups[f"{t['env']}/{t['split']}"].append(t)
    summary = {}
    for key, group in sorted(groups.items()):
        n = len(group)
        success = 100 * sum(t["success"] for t in group) / n
        reward = 100 * sum(t["reward"] for t in group) / n
        summary[key] = {"metric": success if METRICS.get(group[0]["env"]) == "success" else reward,
                        "episodes": n, "success_rate": success, "mean_reward": reward,
                        "mean_steps": sum(t["steps"] for t in group) / n}
    return summary
