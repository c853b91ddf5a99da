namespace Cowfish;

/// <summary>Commit generation; each commit gets the next one.</summary>
public readonly record struct Generation(ulong Value) : IComparable<Generation>
{
    public int CompareTo(Generation other) => Value.CompareTo(other.Value);
    public static bool operator <(Generation a, Generation b) => a.Value < b.Value;
    public static bool operator >(Generation a, Generation b) => a.Value > b.Value;
    public static bool operator <=(Generation a, Generation b) => a.Value <= b.Value;
    public static bool operator >=(Generation a, Generation b) => a.Value >= b.Value;
    public override string ToString() => Value.ToString();
}

/// <summary>Identifier of a B+tree in the pool's catalog.</summary>
public readonly record struct TreeId(ulong Value)
{
    public override string ToString() => Value.ToString();
}
