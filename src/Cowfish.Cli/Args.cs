namespace Cowfish.Cli;

/// <summary>
/// Positional arguments and flags of one command, parsed strictly: unknown <c>--flags</c> are errors.
/// A single-dash word (<c>-p</c>, <c>-o FILE</c>) is a flag or option only if the command declares it, and a positional otherwise,
/// so that values which start with a dash still reach the commands that take them.
/// </summary>
internal sealed class Args
{
    private readonly List<string> _positional = new();
    private readonly HashSet<string> _flags = new();
    private readonly Dictionary<string, string> _options = new();

    public Args(IEnumerable<string> args, IReadOnlySet<string> knownFlags, IReadOnlySet<string>? knownOptions = null)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            string a = list[i];
            if (a == "--") { _positional.AddRange(list.Skip(i + 1)); break; }
            if (a.Length == 2 && a[0] == '-' && a[1] != '-' && knownFlags.Contains(a)) { _flags.Add(a); continue; }
            if (a.Length == 2 && a[0] == '-' && a[1] != '-' && knownOptions is not null && knownOptions.Contains(a))
            {
                // A declared short option (-o FILE) takes the next word as its value.
                if (i + 1 >= list.Count) throw new UsageException($"option {a} needs a value");
                _options[a] = list[++i];
                continue;
            }
            if (a.StartsWith("--", StringComparison.Ordinal) && a.Length > 2)
            {
                string name = a, value = "";
                int eq = a.IndexOf('=');
                if (eq > 0) { name = a[..eq]; value = a[(eq + 1)..]; }
                if (knownFlags.Contains(name) && eq < 0) { _flags.Add(name); continue; }
                if (knownOptions is not null && knownOptions.Contains(name))
                {
                    if (eq < 0)
                    {
                        if (i + 1 >= list.Count) throw new UsageException($"option {name} needs a value");
                        value = list[++i];
                    }
                    _options[name] = value;
                    continue;
                }
                throw new UsageException($"unknown option {name}");
            }
            _positional.Add(a);
        }
    }

    public IReadOnlyList<string> Positional => _positional;
    public bool Has(string flag) => _flags.Contains(flag);
    public bool Has(string flag, string alias) => _flags.Contains(flag) || _flags.Contains(alias);
    public string? Option(string name) => _options.GetValueOrDefault(name);

    public void Expect(int count, string names)
    {
        if (_positional.Count != count)
            throw new UsageException(_positional.Count < count ? $"missing argument(s): expected {names}" : $"too many arguments: expected {names}");
    }

    /// <summary>Like <see cref="Expect(int, string)"/> for commands whose last arguments are optional.</summary>
    public void Expect(int min, int max, string names)
    {
        if (_positional.Count < min) throw new UsageException($"missing argument(s): expected {names}");
        if (_positional.Count > max) throw new UsageException($"too many arguments: expected {names}");
    }

    /// <summary>The positional argument at <paramref name="index"/> parsed as a size or offset, named in the error.</summary>
    public long Size(int index, string name)
    {
        try { return ParseSize(_positional[index]); }
        catch (UsageException e) { throw new UsageException($"{name}: {e.Message}"); }
    }

    /// <summary>Parses sizes such as 4096, 4K, 1M, 2G, 1T (powers of 1024).</summary>
    public static long ParseSize(string text)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new UsageException("empty size");
        string t = text.Trim();
        long mult = 1;
        char last = char.ToUpperInvariant(t[^1]);
        if (t.EndsWith("iB", StringComparison.OrdinalIgnoreCase) || t.EndsWith("B", StringComparison.OrdinalIgnoreCase))
        {
            t = t.TrimEnd('B', 'b').TrimEnd('i');
            last = t.Length > 0 ? char.ToUpperInvariant(t[^1]) : '0';
        }
        int shift = last switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, 'P' => 50, _ => 0 };
        if (shift > 0) { t = t[..^1]; mult = 1L << shift; }
        if (!long.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long n))
            throw new UsageException($"not a size: {text} (use a number with an optional K, M, G or T suffix)");
        try { return checked(n * mult); }
        catch (OverflowException) { throw new UsageException($"size too large: {text}"); }
    }
}
