namespace Cowfish.Cli;

/// <summary>
/// One verb of the cowfish command. <see cref="Usage"/> and <see cref="Summary"/> make the main help
/// listing; <see cref="Details"/>, if any, is printed after them by <c>cowfish VERB --help</c>.
/// <see cref="Flags"/> and <see cref="Options"/> are the only switches <see cref="Args"/> accepts.
/// </summary>
internal sealed record Command(string Name, string Usage, string Summary, Func<Args, Io, int> Run,
    string[]? Flags = null, string[]? Options = null, string? Details = null);
