using System.Text;
using Cowfish.Checking;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests.Support;

/// <summary>
/// The in-memory model the engine is compared with: one sorted dictionary per tree.
/// </summary>
internal sealed class TreeModel
{
    public Dictionary<ulong, SortedDictionary<byte[], byte[]>> Trees { get; } = new();

    public TreeModel Copy()
    {
        var m = new TreeModel();
        foreach (var (id, t) in Trees) m.Trees[id] = new SortedDictionary<byte[], byte[]>(t, BytesComparer.Instance);
        return m;
    }

    public static SortedDictionary<byte[], byte[]> NewTree() => new(BytesComparer.Instance);

    /// <summary>Asserts that the pool holds exactly the model's trees and entries, scanning both ways.</summary>
    public void AssertMatches(Pool pool, string context)
    {
        using var rt = pool.BeginRead();
        AssertMatches(rt, context);
    }

    public void AssertMatches(ReadTransaction rt, string context)
    {
        var ids = rt.ListTrees().Select(t => t.Value).OrderBy(x => x).ToList();
        Assert.True(ids.SequenceEqual(Trees.Keys.OrderBy(x => x)),
            $"{context}: trees {string.Join(",", ids)} but the model has {string.Join(",", Trees.Keys.OrderBy(x => x))}");
        foreach (var (id, model) in Trees)
        {
            var actual = rt.Scan(new TreeId(id)).ToList();
            if (actual.Count != model.Count || !actual.Zip(model).All(p => BytesComparer.Instance.Equals(p.First.Key, p.Second.Key) && BytesComparer.Instance.Equals(p.First.Value, p.Second.Value)))
                Assert.Fail($"{context}: tree {id} has {actual.Count} entries, model {model.Count}; first difference: {FirstDifference(actual, model)}");
            var back = rt.Scan(new TreeId(id), reverse: true).Select(kv => kv.Key).ToList();
            back.Reverse();
            Assert.True(back.Count == model.Count && back.Zip(model.Keys).All(p => BytesComparer.Instance.Equals(p.First, p.Second)), $"{context}: reverse scan of tree {id} differs");
        }
    }

    private static string FirstDifference(List<KeyValuePair<byte[], byte[]>> actual, SortedDictionary<byte[], byte[]> model)
    {
        using var e = model.GetEnumerator();
        int i = 0;
        foreach (var kv in actual)
        {
            if (!e.MoveNext()) return $"extra key {Show(kv.Key)} at {i}";
            if (!BytesComparer.Instance.Equals(kv.Key, e.Current.Key)) return $"at {i}: pool key {Show(kv.Key)}, model key {Show(e.Current.Key)}";
            if (!BytesComparer.Instance.Equals(kv.Value, e.Current.Value)) return $"at {i}: key {Show(kv.Key)} value differs";
            i++;
        }
        return e.MoveNext() ? $"missing key {Show(e.Current.Key)} at {i}" : "none";
    }

    public static string Show(byte[] b) => b.Length <= 40 && b.All(c => c is >= 32 and < 127) ? Encoding.ASCII.GetString(b) : Convert.ToHexString(b.AsSpan(0, Math.Min(b.Length, 20))) + (b.Length > 20 ? "…" : "");

    public static void AssertClean(Pool pool, string context)
    {
        var r = PoolChecker.Check(pool);
        Assert.True(r.IsClean, $"{context}: check found {r.Faults.Count} fault(s):\n" + string.Join("\n", r.Faults.Take(30)));
    }
}
