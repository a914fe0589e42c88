"""hodata.evidence"""
