"""hodata.datasets"""
