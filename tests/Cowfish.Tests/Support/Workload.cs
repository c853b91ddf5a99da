using System.Text;
using Cowfish.Transactions;
using Xunit;

namespace Cowfish.Tests.Support;

/// <summary>
/// Random tree operations applied both to a write transaction and to a model, from one seed.
/// The choices depend only on the random stream and the model, so a replay makes the same calls.
/// </summary>
internal sealed class Workload
{
    private readonly Random _rng;
    private readonly int _keySpace;
    private readonly int _largeValuePercent;

    /// <param name="largeValuePercent">Share of values near the size limit: many make leaves of one or two entries, which empty and collapse often.</param>
    public Workload(int seed, int keySpace = 3000, int largeValuePercent = 3)
    {
        _rng = new Random(seed);
        _keySpace = keySpace;
        _largeValuePercent = largeValuePercent;
    }

    public Random Rng => _rng;

    /// <summary>Runs up to <paramref name="ops"/> random operations on <paramref name="tx"/> and the working model.</summary>
    public void Step(WriteTransaction tx, TreeModel working, int ops)
    {
        for (int i = 0; i < ops; i++)
        {
            if (working.Trees.Count == 0 || (_rng.Next(200) == 0 && working.Trees.Count < 6))
            {
                var id = tx.CreateTree();
                Assert.False(working.Trees.ContainsKey(id.Value), $"tree id {id} reused");
                working.Trees[id.Value] = TreeModel.NewTree();
                continue;
            }
            var ids = working.Trees.Keys.OrderBy(x => x).ToList();
            ulong t = ids[_rng.Next(ids.Count)];
            var model = working.Trees[t];
            int roll = _rng.Next(1000);
            if (roll < 560)
            {
                var k = Key();
                var v = Value();
                tx.Put(new TreeId(t), k, v);
                model[k] = v;
            }
            else if (roll < 800)
            {
                byte[] k = model.Count > 0 && _rng.Next(4) != 0 ? model.Keys.ElementAt(_rng.Next(model.Count)) : Key();
                bool had = model.Remove(k);
                Assert.Equal(had, tx.Delete(new TreeId(t), k));
            }
            else if (roll < 900)
            {
                var k = model.Count > 0 && _rng.Next(2) == 0 ? model.Keys.ElementAt(_rng.Next(model.Count)) : Key();
                bool found = tx.TryGet(new TreeId(t), k, out var v);
                Assert.Equal(model.TryGetValue(k, out var mv), found);
                if (found) Assert.True(BytesComparer.Instance.Equals(mv!, v), $"value of {TreeModel.Show(k)} in tree {t} differs");
            }
            else if (roll < 960)
            {
                // A bounded range scan in either direction, compared with the model.
                var a = Key();
                var b = Key();
                if (BytesComparer.Instance.Compare(a, b) > 0) (a, b) = (b, a);
                bool rev = _rng.Next(2) == 0;
                var got = tx.Scan(new TreeId(t), a, b, rev).Select(kv => kv.Key).ToList();
                var want = model.Keys.Where(k => BytesComparer.Instance.Compare(k, a) >= 0 && BytesComparer.Instance.Compare(k, b) < 0).ToList();
                if (rev) want.Reverse();
                Assert.True(got.SequenceEqual(want, BytesComparer.Instance), $"range scan of tree {t} differs ({got.Count} vs {want.Count} keys)");
            }
            else if (roll < 985 && working.Trees.Count < 8)
            {
                var c = tx.CloneTree(new TreeId(t));
                working.Trees[c.Value] = new SortedDictionary<byte[], byte[]>(model, BytesComparer.Instance);
            }
            else if (working.Trees.Count > 2)
            {
                tx.DropTree(new TreeId(t));
                working.Trees.Remove(t);
            }
        }
    }

    private byte[] Key()
    {
        int n = _rng.Next(_keySpace);
        int shape = _rng.Next(100);
        if (shape < 2) // a long key, to force small fan-out and deep trees
        {
            var k = new byte[Cowfish.Format.Layout.MaxKeySize - _rng.Next(8)];
            Encoding.ASCII.GetBytes($"L{n:D6}").CopyTo(k, 0);
            return k;
        }
        return Encoding.ASCII.GetBytes($"k{n:D6}");
    }

    private byte[] Value()
    {
        int shape = _rng.Next(100);
        int len = shape < _largeValuePercent ? Cowfish.Format.Layout.MaxValueSize - _rng.Next(10) : shape < _largeValuePercent + 7 ? 0 : _rng.Next(1, 120);
        var v = new byte[len];
        _rng.NextBytes(v);
        return v;
    }
}
