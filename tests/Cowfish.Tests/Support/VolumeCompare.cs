using System.Security.Cryptography;
using System.Text;
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

    /// <summary>The first difference between two volumes, or null.</summary>
    public static string? Difference(FileSystem a, string va, FileSystem b, string vb)
    {
        // Both walks see the same facts in the same order up to the first difference: a
        // directory's entries come before anything below them.
        using var fa = Facts(a, va).GetEnumerator();
        using var fb = Facts(b, vb).GetEnumerator();
        while (true)
        {
            bool more = fa.MoveNext();
            if (more != fb.MoveNext()) return more ? $"{fa.Current.Path}: only in {va}" : $"{fb.Current.Path}: only in {vb}";
            if (!more) return null;
            var (x, y) = (fa.Current, fb.Current);
            if (x.Path != y.Path || x.What != y.What) return $"{x.Path} {x.What} vs {y.Path} {y.What}";
            if (x.Bytes is not null && !x.Bytes.AsSpan().SequenceEqual(y.Bytes))
                return $"{x.Path}: bytes differ at {x.Bytes.AsSpan().CommonPrefixLength(y.Bytes)} ({x.Bytes.Length} vs {y.Bytes!.Length})";
            if (x.Text != y.Text) return $"{x.Path}: {x.What} {x.Text} vs {y.Text}";
        }
    }

    /// <summary>
    /// A SHA-256 over everything <see cref="Difference"/> compares, in the same order: two volumes
    /// have the same digest exactly when they do not differ, so a volume deleted since can still
    /// be compared.
    /// </summary>
    public static string Digest(FileSystem fs, string volume)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var f in Facts(fs, volume))
        {
            h.AppendData(Encoding.UTF8.GetBytes($"{f.Path}\0{f.What}\0{f.Text}\0"));
            if (f.Bytes is not null) h.AppendData(f.Bytes);
        }
        return Convert.ToHexString(h.GetHashAndReset());
    }

    /// <summary>What a volume holds, path by path: stat, xattrs, then entries, symlink target or bytes and data ranges.</summary>
    private static IEnumerable<(string Path, string What, string Text, byte[]? Bytes)> Facts(FileSystem fs, string volume)
    {
        var todo = new Stack<string>();
        todo.Push("");
        while (todo.Count > 0)
        {
            string rel = todo.Pop();
            string p = rel.Length == 0 ? volume : $"{volume}/{rel}";
            var st = fs.Stat(p);
            // The record's text shows times to the second only: the ticks make it exact.
            yield return (rel, "stat", $"{st} {st.Accessed.UtcTicks} {st.Modified.UtcTicks} {st.Changed.UtcTicks} {st.Born.UtcTicks}", null);
            yield return (rel, "xattrs", string.Join(",", fs.ListXattrs(p).Select(x => $"{x.Name}={Convert.ToHexString(x.Value)}").Order(StringComparer.Ordinal)), null);
            switch (st.Type)
            {
                case FileType.Directory:
                {
                    var entries = fs.ListDirectory(p).OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
                    yield return (rel, "entries", string.Join(",", entries.Select(e => (e.Name, e.Inode, e.Type))), null);
                    foreach (var e in entries) todo.Push(rel.Length == 0 ? e.Name : $"{rel}/{e.Name}");
                    break;
                }
                case FileType.Symlink:
                    yield return (rel, "symlink", fs.ReadSymlink(p), null);
                    break;
                case FileType.File:
                    yield return (rel, "bytes", "", fs.ReadAll(p));
                    yield return (rel, "data ranges", string.Join(",", fs.DataRanges(p)), null);
                    break;
            }
        }
    }
}
