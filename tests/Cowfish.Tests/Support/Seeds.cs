using Xunit.Abstractions;

namespace Cowfish.Tests.Support;

/// <summary>
/// Seeds for randomised tests. Every test prints the seed it uses; set COWFISH_SEED to replay one.
/// Seeds that ever failed are pinned in the tests' own lists.
/// </summary>
internal static class Seeds
{
    public static int[] For(int count, params int[] pinned)
    {
        if (Environment.GetEnvironmentVariable("COWFISH_SEED") is { Length: > 0 } s && int.TryParse(s, out int one))
            return [one];
        var seeds = new List<int>(pinned);
        var r = new Random(Environment.TickCount);
        while (seeds.Count < pinned.Length + count) seeds.Add(r.Next());
        return seeds.ToArray();
    }

    public static void Announce(ITestOutputHelper output, string test, int seed)
    {
        string line = $"{test}: seed {seed} (replay with COWFISH_SEED={seed})";
        output.WriteLine(line);
        Console.WriteLine(line);
    }
}

/// <summary>Orders byte arrays as the trees do.</summary>
internal sealed class BytesComparer : IComparer<byte[]>, IEqualityComparer<byte[]>
{
    public static readonly BytesComparer Instance = new();
    public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);
    public int GetHashCode(byte[] obj)
    {
        var h = new HashCode();
        h.AddBytes(obj);
        return h.ToHashCode();
    }
}
