using Cowfish.Files;
using Xunit;

namespace Cowfish.Tests.Support;

/// <summary>Compares two volumes (possibly in two pools) entry by entry: names, inode numbers, types, attributes, times, xattrs, symlinks and bytes.</summary>
internal static class VolumeCompare
{
    public static void AssertSame(FileSystem a, string va, FileSystem b, string vb, string context = "")
    {
        var diff = Difference(a, va, b, vb);
        Assert.True(diff is null, $"{context}: {va} and {vb} differ: {diff}");
    }

    /// <summary>
    /// A SHA-256 over everything <see cref="Difference"/> compares (paths, stat, xattrs, entries,
    /// symlink targets, bytes and data ranges), in a fixed order: two volumes have the same digest
    /// exactly when they do not differ, so a volume deleted since can still be compared.
    /// </summary>
    public static string Digest(FileSystem fs, string volume)
    {
        using var h = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        void Add(string s) { h.AppendData(System.Text.Encoding.UTF8.GetBytes(s)); h.AppendData("\0"u8); }
        var todo = new Stack<string>();
        todo.Push("");
        while (todo.Count > 0)
        {
            string rel = todo.Pop();
            string p = rel.Length == 0 ? volume : $"{volume}/{rel}";
            var st = fs.Stat(p);
            Add(rel);
            Add(st.ToString());
            foreach (var x in fs.ListXattrs(p).Select(x => $"{x.Name}={Convert.ToHexString(x.Value)}").Order(StringComparer.Ordinal)) Add(x);
            switch (st.Type)
            {
                case FileType.Directory:
                    foreach (var e in fs.ListDirectory(p).OrderBy(e => e.Name, StringComparer.Ordinal))
                    {
                        Add($"{e.Name} {e.Inode} {e.Type}");
                        todo.Push(rel.Length == 0 ? e.Name : $"{rel}/{e.Name}");
                    }
                    break;
                case FileType.Symlink:
                    Add(fs.ReadSymlink(p));
                    break;
                case FileType.File:
                    h.AppendData(fs.ReadAll(p));
                    Add(string.Join(",", fs.DataRanges(p)));
                    break;
            }
        }
        return Convert.ToHexString(h.GetHashAndReset());
    }

    public static string? Difference(FileSystem a, string va, FileSystem b, string vb)
    {
        var todo = new Stack<string>();
        todo.Push("");
        while (todo.Count > 0)
        {
            string rel = todo.Pop();
            string pa = rel.Length == 0 ? va : $"{va}/{rel}", pb = rel.Length == 0 ? vb : $"{vb}/{rel}";
            var sa = a.Stat(pa);
            var sb = b.Stat(pb);
            if (sa != sb) return $"{rel}: stat {sa} vs {sb}";
            var xa = a.ListXattrs(pa).Select(x => $"{x.Name}={Convert.ToHexString(x.Value)}").Order().ToList();
            var xb = b.ListXattrs(pb).Select(x => $"{x.Name}={Convert.ToHexString(x.Value)}").Order().ToList();
            if (!xa.SequenceEqual(xb)) return $"{rel}: xattrs {string.Join(",", xa)} vs {string.Join(",", xb)}";
            switch (sa.Type)
            {
                case FileType.Directory:
                {
                    var ea = a.ListDirectory(pa).Select(e => (e.Name, e.Inode, e.Type)).OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
                    var eb = b.ListDirectory(pb).Select(e => (e.Name, e.Inode, e.Type)).OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
                    if (!ea.SequenceEqual(eb)) return $"{rel}: entries [{string.Join(",", ea)}] vs [{string.Join(",", eb)}]";
                    foreach (var e in ea) todo.Push(rel.Length == 0 ? e.Name : $"{rel}/{e.Name}");
                    break;
                }
                case FileType.Symlink:
                    if (a.ReadSymlink(pa) != b.ReadSymlink(pb)) return $"{rel}: symlink targets differ";
                    break;
                case FileType.File:
                {
                    var ba = a.ReadAll(pa);
                    var bb = b.ReadAll(pb);
                    if (!ba.AsSpan().SequenceEqual(bb)) return $"{rel}: bytes differ at {ba.AsSpan().CommonPrefixLength(bb)}";
                    var ra = a.DataRanges(pa);
                    var rb = b.DataRanges(pb);
                    if (!ra.SequenceEqual(rb)) return $"{rel}: data ranges [{string.Join(",", ra)}] vs [{string.Join(",", rb)}]";
                    break;
                }
            }
        }
        return null;
    }
}
