"""Anchor prompts: everyday chit-chat that any chat model answers as well as a frontier one.

The shared training data is all exam questions and hard arena prompts, so on its own it says nothing about
the greetings, thanks and small talk that make up a visible share of real chat traffic. These anchors carry
that one prior into training (both tiers answer perfectly -> "large not needed"). They are deliberately
generic, few, and never used for evaluation.
"""

from __future__ import annotations

from routers.data import Example

EASY_CHAT: tuple[str, ...] = (
    "hello",
    "hi",
    "hey!",
    "good morning",
    "good evening, how's it going?",
    "hello, how are you?",
    "hey, what's up?",
    "hi, nice to meet you",
    "thanks!",
    "thank you so much",
    "thanks, that helped a lot",
    "ok cool",
    "great, thanks",
    "bye",
    "see you later",
    "have a nice day",
    "good night",
    "lol",
    "yes please",
    "no thanks",
    "sounds good",
    "can you say that again?",
    "what's your name?",
    "who are you?",
    "are you a robot?",
    "how was your day?",
    "tell me a joke",
    "say hello in French",
    "what day comes after Monday?",
    "what is 2 + 2?",
    "what color is the sky?",
    "how many days are in a week?",
    "spell the word cat",
    "give me a synonym for happy",
    "translate 'thank you' into Spanish",
    "what's the opposite of cold?",
    "write the word hello in capital letters",
    "is water wet?",
    "recommend a name for my cat",
    "what do cows drink?",
    "count from one to five",
    "what is the plural of mouse?",
    "I'm bored",
    "I'm back",
    "good job",
    "nice, thank you!",
    "hi there, can you help me?",
    "hello again",
)


def anchor_examples() -> list[Example]:
    """The anchors as training examples: both tiers score 1.0, explicit label 0 under every definition."""
    return [Example(text, 1.0, 1.0, "anchor", f"anchor:{i}", label=0.0) for i, text in enumerate(EASY_CHAT)]
