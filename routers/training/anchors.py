"""Anchor prompts: the two ends of chat traffic that the shared data does not cover.

The shared training data is exam questions and a few hundred arena prompts. On its own it says nothing
about the greetings, thanks and small talk that make up a visible share of real chat traffic (any chat
model answers them as well as a frontier one: label 0), nor about free-form proofs, system design and
hard engineering requests (a small model's answer falls apart: label 1); the MMLU questions that look
closest to those, school mathematics, are ones both tiers answer alike. These anchors carry the two
priors into training. They are deliberately generic, few, kept apart from the tests' prompts, and never
used for evaluation.
"""

from __future__ import annotations

from routers.training.data import Example

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


HARD_TASKS: tuple[str, ...] = (
    "prove that the sum of the reciprocals of the primes diverges",
    "prove by induction that 1 + 3 + 5 + ... + (2n - 1) = n^2, then generalise to sums of k-th powers",
    "show that every bounded monotone sequence of real numbers converges, with a rigorous epsilon-delta proof",
    "prove that a group of order p^2, for p prime, is abelian",
    "prove that there is no largest prime number and that the gaps between primes can be arbitrarily long",
    "derive the closed form of the Fibonacci numbers using generating functions and prove it is correct",
    "prove the Cauchy-Schwarz inequality for inner product spaces and state when equality holds",
    "show that the halting problem is undecidable using a diagonal argument",
    "prove that the eigenvalues of a real symmetric matrix are real and its eigenvectors can be chosen orthonormal",
    "give a formal proof in natural deduction that (P -> Q) and (Q -> R) entail (P -> R)",
    "derive the Black-Scholes partial differential equation from a self-financing hedging argument",
    "derive the Euler-Lagrange equations from the principle of stationary action",
    "solve the recurrence T(n) = 2T(n/2) + n log n and prove the bound with the substitution method",
    "a 10 m ladder slides down a wall at 1 m/s at the foot; how fast does the top fall when the foot is 6 m out?",
    "three guests pay 30 dollars, get 5 back via a bellboy who keeps 2; explain where the missing dollar went",
    "design a distributed rate limiter for a multi-region API with exact global quotas and explain its failure modes",
    "design the database schema, indexes and sharding strategy for a social network feed with 100 million users",
    "implement a lock-free multi-producer multi-consumer queue in C++ and argue why it is linearizable",
    "write a parser and interpreter for a small Lisp with closures, tail calls and proper error messages, in Rust",
    "implement Raft leader election and log replication in Go, with tests for network partitions",
    "my asyncio service deadlocks under load only in production; here is the traceback, find the root cause",
    "refactor this 2,000-line legacy Java class into smaller components without changing behaviour",
    "write a CUDA kernel for tiled matrix multiplication and explain how to choose the tile size for shared memory",
    "implement Dijkstra's algorithm with a Fibonacci heap and prove its running time",
    "explain why this knapsack dynamic programme is wrong and give a correct O(nW) algorithm with proof",
    "write a SQL query that computes a 7-day rolling retention cohort table from raw event logs, handling time zones",
    "analyse the time and space complexity of a suffix automaton construction and prove it is linear",
    "compare promissory estoppel and consideration in US and English contract law, citing leading cases",
    "a patient has fever, a new heart murmur and splinter haemorrhages; walk through the differential diagnosis",
    "evaluate the effects of raising interest rates during a supply shock, with a formal IS-LM-PC argument",
    "critique the methodology of a randomised trial with 30% loss to follow-up and propose a sensitivity analysis",
    "explain the proof of Godel's first incompleteness theorem and what it does and does not imply",
    "write a rigorous argument that the set of real numbers is uncountable and that the rationals are countable",
    "calculate the expected number of coin flips to see three heads in a row and derive it with a Markov chain",
    "given a 4x4 matrix, compute its Jordan normal form and the change of basis matrix, explaining each step",
    "derive the time-independent Schrodinger equation solution for a particle in a finite potential well",
    "plan a migration of a monolithic payments system to microservices with zero downtime and exactly-once semantics",
    "write a formal specification in TLA+ of a two-phase commit protocol and explain how to model-check it",
    "solve this logic puzzle: five houses, five owners, five pets; who owns the zebra? show the full deduction",
    "prove that the square root of 3 is irrational and that a rational plus an irrational is irrational",
    "estimate the number of piano tuners in Chicago with a Fermi estimate, stating and justifying every assumption",
    "explain the attention mechanism mathematically, derive its gradient, and analyse its quadratic cost",
    "optimise this slow pandas pipeline over 50 GB of data and explain the memory trade-offs of each change",
    "write a compiler pass that performs constant propagation on SSA form and prove it preserves semantics",
    "reconcile these conflicting accounting entries for deferred revenue under IFRS 15 and prepare the journal entries",
    "derive the maximum likelihood estimator for a Weibull distribution and discuss its asymptotic properties",
    "write a detailed, sourced essay comparing the causes of the First and Second World Wars",
    "find all integer solutions of x^2 - 2y^2 = 1 and prove that your list is complete",
)


def anchor_examples() -> list[Example]:
    """Chit-chat (group ``anchor``, label 0) and hard tasks (group ``anchor-hard``, label 1)."""
    easy = [Example(text, 1.0, 1.0, "anchor", f"anchor:{i}", label=0.0) for i, text in enumerate(EASY_CHAT)]
    hard = [Example(t, 0.0, 1.0, "anchor-hard", f"anchor-hard:{i}", label=1.0) for i, t in enumerate(HARD_TASKS)]
    return easy + hard
