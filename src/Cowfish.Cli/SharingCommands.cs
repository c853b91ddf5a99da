using System.Text.Json;
using Cowfish.Files;

namespace Cowfish.Cli;

/// <summary>The verbs that share blocks or measure sharing: <c>cp</c> (reflink), <c>clone-range</c>, <c>dedupe</c>, <c>du</c>.</summary>
internal static class SharingCommands
{
    public static readonly Command[] All =
    [
        new("cp", "cp POOL SRC DST", "Reflink clone of a file (never a data copy); into DST/NAME if DST is a directory.", Cp),
        new("clone-range", "clone-range POOL SRC SRC_OFFSET LENGTH DST DST_OFFSET",
            "Share a block-aligned range of SRC into DST (created if missing); LENGTH 0 means to SRC's end.", CloneRange),
        new("dedupe", "dedupe POOL A A_OFFSET LENGTH B B_OFFSET [--json]", "If the ranges hold the same bytes, make B share A's blocks; else print 'differs'.", Dedupe,
            Flags: ["--json"]),
        new("du", "du POOL [VOLUME[/PATH]] [--bytes] [--json]", "Space used by a file, tree, volume or the pool: total, exclusive and shared bytes.", Du,
            Flags: ["--bytes", "--json"]),
    ];

    private static int Cp(Args a, Io io)
    {
        a.Expect(3, "POOL SRC DST");
        string src = a.Positional[1];
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        if (fs.Stat(src).Type != FileType.File) throw new InvalidRequestException($"{src}: not a regular file (cp clones one file)");
        fs.Clone(src, PoolPaths.IntoDirectory(fs, a.Positional[2], PoolPaths.Leaf(src)));
        return ExitCodes.Ok;
    }

    private static int CloneRange(Args a, Io io)
    {
        a.Expect(6, "POOL SRC SRC_OFFSET LENGTH DST DST_OFFSET");
        string src = a.Positional[1], dst = a.Positional[4];
        long srcOffset = a.Size(2, "SRC_OFFSET"), length = a.Size(3, "LENGTH"), dstOffset = a.Size(5, "DST_OFFSET");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        fs.Stat(src);
        bool created = PoolPaths.EnsureFile(fs, dst);
        try { fs.CloneRange(src, srcOffset, length, dst, dstOffset); }
        catch (CowfishException) when (created)
        {
            // Do not leave behind an empty file that only this failed command asked for.
            try { fs.Remove(dst); }
            catch (CowfishException) { }
            throw;
        }
        fs.Reclaim();
        return ExitCodes.Ok;
    }

    private static int Dedupe(Args a, Io io)
    {
        a.Expect(6, "POOL A A_OFFSET LENGTH B B_OFFSET");
        long aOffset = a.Size(2, "A_OFFSET"), length = a.Size(3, "LENGTH"), bOffset = a.Size(5, "B_OFFSET");
        if (length == 0) throw new UsageException("LENGTH must be positive");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        bool same = fs.Dedupe(a.Positional[1], aOffset, length, a.Positional[4], bOffset);
        if (same) fs.Reclaim();
        if (a.Has("--json")) io.Out.WriteLine(JsonSerializer.Serialize(new { deduped = same, bytes = same ? length : 0 }, Cli.Json));
        else io.Out.WriteLine(same ? $"deduped {length} bytes" : "differs");
        return ExitCodes.Ok;
    }

    private static int Du(Args a, Io io)
    {
        a.Expect(1, 2, "POOL [VOLUME[/PATH]]");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        var rows = new List<(string? Path, SpaceUsage Usage)>();
        if (a.Positional.Count == 2) rows.Add((a.Positional[1], fs.Usage(a.Positional[1])));
        else
        {
            foreach (var v in fs.ListVolumes().OrderBy(v => v.Name, StringComparer.Ordinal)) rows.Add((v.Name, fs.Usage(v.Name)));
            rows.Add((null, fs.Usage(null)));
        }

        if (a.Has("--json"))
        {
            static object Row(string? path, SpaceUsage u) => new { path, total = u.TotalBytes, exclusive = u.ExclusiveBytes, shared = u.SharedBytes };
            object doc = a.Positional.Count == 2
                ? Row(rows[0].Path, rows[0].Usage)
                : new { path = (string?)null, total = rows[^1].Usage.TotalBytes, exclusive = rows[^1].Usage.ExclusiveBytes, shared = rows[^1].Usage.SharedBytes,
                        volumes = rows.SkipLast(1).Select(r => Row(r.Path, r.Usage)) };
            io.Out.WriteLine(JsonSerializer.Serialize(doc, Cli.Json));
            return ExitCodes.Ok;
        }
        Func<ulong, string> fmt = a.Has("--bytes") ? n => n.ToString() : Cli.FormatBytes;
        var cells = rows.Select(r => (fmt(r.Usage.TotalBytes), fmt(r.Usage.ExclusiveBytes), fmt(r.Usage.SharedBytes), r.Path ?? "(pool)")).ToList();
        int w = Math.Max(9, cells.Max(c => Math.Max(c.Item1.Length, Math.Max(c.Item2.Length, c.Item3.Length))));
        io.Out.WriteLine($"{"Total".PadLeft(w)}  {"Exclusive".PadLeft(w)}  {"Shared".PadLeft(w)}  Path");
        foreach (var (t, e, s, p) in cells) io.Out.WriteLine($"{t.PadLeft(w)}  {e.PadLeft(w)}  {s.PadLeft(w)}  {p}");
        return ExitCodes.Ok;
    }
}
