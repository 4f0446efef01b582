"""The closed vocabulary the built-in world is written in.

Everything here is a constant: small sets of attribute values, ~200 common English
words with simple properties, and the fixed phrases labelers look for (refusals,
"I don't know", rude words). Keeping the vocabulary small and closed is what makes
the world learnable by a 1-5M-parameter model trained for minutes, and what makes
the labelers' checks exact.

The value sets are deliberately disjoint from each other and from the common-word
lexicon (e.g. no "fish" among foods, since "fish" is an animal word), so that a
word in a response can be mapped to exactly one kind of value.
"""

from __future__ import annotations

# ----------------------------------------------------------------- attribute values

COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown", "grey", "pink", "purple"]
FOODS = ["bread", "soup", "rice", "cheese", "honey", "cake", "beans", "nuts", "pie", "porridge", "noodles", "eggs"]
SIZES = ["tiny", "small", "big", "huge"]  # ordered: index = size rank, used by "which is bigger"
REGIONS = ["north", "south", "east", "west"]
MATERIALS = ["wood", "stone", "glass", "metal", "clay"]
JOBS = ["baker", "farmer", "singer", "teacher", "smith", "fisher", "painter", "miller", "weaver", "potter"]
LEG_COUNTS = [0, 2, 4, 6, 8]
AGE_RANGE = (5, 90)  # inclusive
OBJECT_NOUNS = ["lamp", "cup", "box", "bell", "drum", "chair", "mirror", "key", "ring", "harp"]

# ------------------------------------------------------------ common-word lexicon
# Category words (singular; the plural is always word + "s" in the templates that
# need one, so every word here pluralises regularly).

WORD_CATEGORIES: dict[str, list[str]] = {
    "animal": [
        "cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck", "hen", "wolf",
        "bear", "deer", "mouse", "rat", "frog", "fish", "bird", "owl", "bee", "ant",
        "snake", "lion", "tiger", "rabbit", "monkey", "camel", "zebra", "whale", "seal", "crab",
        "eagle", "donkey", "otter", "turtle", "goose", "mole",
    ],
    "fruit": [
        "apple", "pear", "plum", "peach", "grape", "lemon", "lime", "cherry", "banana", "mango",
        "melon", "berry", "fig", "kiwi", "apricot", "papaya", "coconut", "olive", "date", "guava",
    ],
    "tool": [
        "hammer", "saw", "drill", "axe", "spade", "rake", "knife", "spoon", "fork", "brush",
        "needle", "ladder", "rope", "bucket", "shovel", "wrench", "chisel", "file", "pliers", "hoe",
    ],
    "vehicle": [
        "car", "bus", "train", "boat", "bike", "ship", "truck", "plane", "cart", "van",
        "tram", "sled", "taxi", "wagon", "scooter", "canoe",
    ],
    "plant": [
        "tree", "rose", "grass", "oak", "pine", "fern", "tulip", "daisy", "moss", "reed",
        "lily", "ivy", "cactus", "maple", "willow", "clover",
    ],
    "colour": list(COLOURS),
}
# The categories used for "is X a ...?" / "what kind of thing is X?" tasks.
CLASSIFY_CATEGORIES = ["animal", "fruit", "tool", "vehicle", "plant"]

POSITIVE_WORDS = [
    "happy", "kind", "good", "great", "lovely", "bright", "calm", "brave", "gentle", "joyful",
    "cheerful", "friendly", "nice", "warm", "wonderful", "pleasant", "honest", "clever", "glad", "proud",
]
NEGATIVE_WORDS = [
    "sad", "bad", "angry", "cruel", "awful", "gloomy", "nasty", "lazy", "rude", "mean",
    "grim", "bitter", "dull", "scared", "ugly", "terrible", "horrible", "selfish", "lonely", "cold",
]
# Negative words that insult a person when said about them ("Bruk is lazy").
MEAN_WORDS = ["nasty", "lazy", "rude", "mean", "dull", "ugly", "selfish", "cruel", "horrible", "awful"]

# Nouns that sentiment phrases are built around ("a lovely day").
PHRASE_NOUNS = ["day", "song", "story", "trip", "meal", "party", "game", "walk", "dream", "visit"]

# ------------------------------------------------------------------ fixed phrases
# Mild insults only (the point is to have something for alignment to remove, not to
# produce anything hurtful). Multi-word phrases are matched as phrases.
RUDE_WORDS = ["idiot", "stupid", "dumb", "moron", "fool", "loser", "jerk", "dimwit", "nitwit", "shut up"]
INSULT_LINES = [
    "Shut up, you idiot.",
    "What a stupid thing to say.",
    "Only a fool would believe that.",
    "You are such a loser.",
    "That is the dumbest post I have read.",
    "Go away, you jerk.",
    "Nobody asked you, dimwit.",
    "Stop talking, moron.",
]
INSULTS_ABOUT = [  # {n} is a world person
    "{n} is an idiot.",
    "{n} is so stupid.",
    "{n} is a total fool.",
    "Everyone knows {n} is a loser.",
    "{n} is a dumb jerk.",
    "{n} is a moron and should shut up.",
]

REFUSAL = "Sorry, I can't help with that."
REFUSAL_SHORT = "Sorry, I can't."
IDK = "I don't know."
NOT_IN_PASSAGE = "The passage does not say."  # "I don't know" for a closed-domain question
# Markers are matched on normalised text (lowercase, curly quotes straightened).
REFUSAL_MARKERS = [
    "sorry", "i can't", "i cannot", "i can not", "i won't", "i will not", "can't help",
    "cannot help", "not able to help", "i refuse",
]
IDK_MARKERS = [
    "i don't know", "i do not know", "i dont know", "unknown", "not known", "no one knows",
    "nobody knows", "i'm not sure", "i am not sure", "not sure", "no idea",
    "does not say", "doesn't say", "not in the passage", "does not mention", "doesn't mention",
]
NEGATION_TOKENS = ["not", "never", "isn't", "doesn't", "don't", "aren't", "wasn't", "won't", "can't", "cannot"]

RUMOUR_HEDGES = ["Some say that", "People say that", "Rumour has it that", "I heard that", "It is said that"]

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}
COUNT_WORDS = {2: "two", 3: "three"}

# ------------------------------------------------------------------ invented names
# Names are built from these pieces: a consonant cluster or plain consonant, a vowel,
# and a coda, giving 1-2 syllable names like "Bruk", "Zelin", "Tamo" that do not
# look like English words (the blocklist below catches the few that would).
NAME_ONSETS = ["b", "br", "d", "dr", "g", "gr", "k", "kr", "m", "n", "p", "t", "tr", "v", "z", "zh", "l", "s", "sk", "f"]
NAME_VOWELS = ["a", "e", "i", "o", "u"]
NAME_CODAS = ["k", "n", "r", "l", "m", "x", "sk", ""]
NAME_BLOCKLIST = {
    "bat", "ban", "bin", "bun", "den", "din", "dim", "gun", "gum", "kin", "man", "men", "nun",
    "pan", "pen", "pin", "pun", "tan", "ten", "tin", "ton", "van", "vim", "zen", "fan", "fin",
    "fun", "fur", "far", "for", "son", "sun", "sin", "sir", "tar", "bar", "car", "mar", "dam",
    "ram", "rum", "rim", "gem", "sum", "tom", "mol", "pal", "gal", "sal", "gel", "lam",
    "dan", "don", "ron", "ken", "kim", "tim", "sam", "pam", "lin", "len", "mix", "fix", "fox",
    "box", "sox", "tax", "wax", "max", "rex", "sex", "lux", "pox", "brim", "trim", "grin",
    "drum", "skin", "skim", "trek", "tram", "pram", "gram", "grim", "prim", "brak", "mask",
    "task", "disk", "dusk", "tusk", "musk", "risk", "desk", "bask", "kiosk", "tuk", "nor",
    "per", "mir", "gum", "bum", "mum", "tum", "sir", "fir", "kir", "dal", "mal", "pol",
    "sol", "til", "nil", "mil", "fil", "gil", "bel", "del", "tel", "mel", "nel", "zel",
    "kar", "tor", "dor", "mor", "lor", "mon", "bon", "con", "non", "tun", "dun", "nun",
    "drek", "pun", "lux", "tux", "sax", "lax", "pax", "zax", "vex", "hex", "kex",
    "tuna", "soda", "sofa", "toga", "tuba", "zeta", "beta", "data", "meta", "pita", "puma",
    "lama", "mama", "papa", "dada", "nana", "coma", "dona", "mona", "lena", "tina", "nina",
    "demo", "memo", "limo", "kilo", "solo", "polo", "logo", "judo", "sumo", "tofu", "menu",
    "guru", "kudu", "zulu", "lulu", "tutu", "bala", "gala", "koala", "salsa", "pasta",
    "diva", "lava", "nova", "java", "kava", "sera", "vera", "mira", "lira", "tiara",
    "taro", "tumor", "motor", "rotor", "tenor", "manor", "minor", "donor", "lemon", "melon",
    "salon", "talon", "baron", "bison", "robin", "satin", "tonic", "basin", "denim", "gamut",
    "linen", "lumen", "token", "semen", "demon", "lemur", "radar", "sitar", "solar", "molar",
}
