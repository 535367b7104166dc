from .names import markdown

print(markdown(), end="")
