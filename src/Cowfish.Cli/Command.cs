namespace Cowfish.Cli;

/// <summary>
/// One verb of the cowfish command. <see cref="Usage"/> and <see cref="Summary"/> make the main help
/// listing; <see cref="Details"/>, if any, is printed after them by <c>cowfish VERB --help</c>.
/// <see cref="Flags"/> and <see cref="Options"/> are the only switches <see cref="Args"/> accepts.
/// <see cref="PoolArgument"/> is the position of the POOL argument, or -1 for verbs that never run
/// inside a server (<c>mkfs</c>, <c>serve</c>): while a server holds the pool, the others are sent to it.
/// </summary>
internal sealed record Command(string Name, string Usage, string Summary, Func<Args, Io, int> Run,
    string[]? Flags = null, string[]? Options = null, string? Details = null, int PoolArgument = 0);
