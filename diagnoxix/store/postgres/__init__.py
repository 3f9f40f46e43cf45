"""The scaled-out store: PostgreSQL (asyncpg), shared by every process of a deployment.

Seqs become visible in commit order across processes: every write that takes seqs holds one
advisory lock from before its transaction until its commit has been published (`writer`).
"""
